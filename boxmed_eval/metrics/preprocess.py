"""Report preprocessing before NLG scoring: an explicit, recorded choice.

* ``r2gen`` (default): R2Gen's report cleaning (``modules/tokenizers.py`` of
  cuhksz-nlp/R2Gen, ``clean_report_mimic_cxr``), then single spaces between tokens, which is what
  R2Gen's decode step (token ids back to words joined by " ") hands to pycocoevalcap. Published
  R2Gen-family numbers are computed on such text. Quirks kept on purpose: the punctuation class
  ``[.,?;*!%^&_+():-\\[\\]{}]`` contains the range ``:-\\[``, which also deletes ``;<=>?@`` and
  the upper-case letters (harmless after lower-casing), and removing "." turns "3.5 cm" into
  "35 cm"; list numbers "1. " are dropped. Unlike R2Gen, words are not mapped to ``<unk>`` by a
  training vocabulary and reports are not cut at ``max_seq_length`` tokens.
* ``r2gen_iu``: the same with ``clean_report_iu_xray`` (no newline / "__" / double-space
  handling; identical on IU X-Ray text without those).
* ``lower``: whitespace collapsed (newlines included) and lower-cased; punctuation kept.
* ``none``: the text exactly as given (scores equal pycocoevalcap's on the same strings; METEOR
  still replaces line breaks, which would otherwise break its jar).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from boxmed_eval.errors import BoxmedError

PREPROCESSING_CHOICES: tuple[str, ...] = ("r2gen", "r2gen_iu", "lower", "none")

# Verbatim from R2Gen (the character class, quirks included).
_R2GEN_PUNCT_RE = re.compile("[.,?;*!%^&_+():-\\[\\]{}]")


def _r2gen_sentence_cleaner(sentence: str) -> str:
    return _R2GEN_PUNCT_RE.sub("", sentence.replace('"', "").replace("/", "").replace("\\", "")
                               .replace("'", "").strip().lower())


def clean_report_iu_xray(report: str) -> str:
    """R2Gen's ``Tokenizer.clean_report_iu_xray``, statement for statement."""
    sentences = (report.replace("..", ".").replace("..", ".").replace("..", ".").replace("1. ", "")
                 .replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ").replace(". 5. ", ". ")
                 .replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ").replace(" 5. ", ". ")
                 .strip().lower().split(". "))
    # R2Gen filters with `sent_cleaner(sent) != []`, which is always true for a string: empty
    # sentences are kept (they become " .  . " runs), and so they are here.
    tokens = [_r2gen_sentence_cleaner(sentence) for sentence in sentences]
    return " . ".join(tokens) + " ."


def clean_report_mimic_cxr(report: str) -> str:
    """R2Gen's ``Tokenizer.clean_report_mimic_cxr``, statement for statement."""
    text = report.replace("\n", " ")
    for _ in range(7):
        text = text.replace("__", "_")
    for _ in range(6):
        text = text.replace("  ", " ")
    for _ in range(8):
        text = text.replace("..", ".")
    sentences = (text.replace("1. ", "").replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ")
                 .replace(". 5. ", ". ").replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ")
                 .replace(" 5. ", ". ").strip().lower().split(". "))
    tokens = [_r2gen_sentence_cleaner(sentence) for sentence in sentences]
    return " . ".join(tokens) + " ."


def _single_spaced(text: str) -> str:
    return " ".join(text.split())


def preprocess_r2gen(report: str) -> str:
    return _single_spaced(clean_report_mimic_cxr(report))


def preprocess_r2gen_iu(report: str) -> str:
    return _single_spaced(clean_report_iu_xray(report))


def preprocess_lower(report: str) -> str:
    return _single_spaced(report).lower()


def preprocess_none(report: str) -> str:
    return report


_PREPROCESSORS: dict[str, Callable[[str], str]] = {
    "r2gen": preprocess_r2gen, "r2gen_iu": preprocess_r2gen_iu,
    "lower": preprocess_lower, "none": preprocess_none,
}


def get_preprocessor(name: str) -> Callable[[str], str]:
    try:
        return _PREPROCESSORS[name]
    except KeyError:
        raise BoxmedError(f"unknown NLG preprocessing {name!r}; choose one of "
                          f"{', '.join(PREPROCESSING_CHOICES)} (metric option preprocess=...)") from None


def preprocess_reports(texts: dict[str, str], name: str) -> dict[str, str]:
    clean = get_preprocessor(name)
    return {key: clean(value if isinstance(value, str) else "") for key, value in texts.items()}
