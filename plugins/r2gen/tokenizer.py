"""R2Gen's tokenizer: its report cleaning and its word vocabulary.

Behaviour copied from ``modules/tokenizers.py`` of the public R2Gen code, quirks included,
because published R2Gen-family scores are computed on text cleaned this way:

- reports are split into sentences on ``". "``, numbered-list markers are removed, each
  sentence is lower-cased and stripped of punctuation by the character class
  ``[.,?;*!%^&_+():-\\[\\]{}]``. That class holds the *range* ``:-\\[`` (``:;<=>?@``, ``A-Z``
  and ``[``), so ``-`` itself is kept ("x-ray" stays) and so is ``#``; ``"3.5 cm"`` becomes
  ``"35 cm"``; sentences are re-joined with ``" . "`` and a final ``" ."``.
- the vocabulary is every word of the training reports seen at least ``threshold`` times,
  plus ``<unk>``, sorted, with ids from 1; id 0 is bos, eos and padding at once.

The vocabulary is saved as JSON next to (and inside) every checkpoint, because R2Gen rebuilds
it from the annotation file at each start and a checkpoint is useless without the same one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boxmed_eval.records import read_json
from boxmed_eval.errors import DataError

DATASET_NAMES = ("iu_xray", "mimic_cxr")
UNK = "<unk>"
BOS_EOS_PAD_ID = 0
TOKENIZER_FORMAT = "r2gen-tokenizer"

# The upstream pattern, byte for byte (see the module docstring for what the range deletes).
_PUNCTUATION_RE = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_NUMBERED_LIST = (("1. ", ""), (". 2. ", ". "), (". 3. ", ". "), (". 4. ", ". "), (". 5. ", ". "),
                  (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "), (" 5. ", ". "))


def _repeat_replace(text: str, old: str, new: str, times: int) -> str:
    # Upstream chains a fixed number of .replace() calls (not "until stable"): keep the count.
    for _ in range(times):
        text = text.replace(old, new)
    return text


def _clean_sentence(sentence: str) -> str:
    sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
    return _PUNCTUATION_RE.sub("", sentence)


def _join_sentences(text: str) -> str:
    for old, new in _NUMBERED_LIST:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    # Upstream filters with `!= []`, which is always true for a string: empty sentences stay.
    return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def clean_report_iu_xray(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``."""
    return _join_sentences(_repeat_replace(report, "..", ".", 3))


def clean_report_mimic_cxr(report: str) -> str:
    """R2Gen's ``clean_report_mimic_cxr`` (also folds newlines, runs of ``_`` and spaces)."""
    text = report.replace("\n", " ")
    text = _repeat_replace(text, "__", "_", 7)
    text = _repeat_replace(text, "  ", " ", 6)
    text = _repeat_replace(text, "..", ".", 8)
    return _join_sentences(text)


CLEANERS = {"iu_xray": clean_report_iu_xray, "mimic_cxr": clean_report_mimic_cxr}


def check_dataset_name(dataset_name: str) -> str:
    if dataset_name not in DATASET_NAMES:
        raise DataError(f"unknown R2Gen dataset_name {dataset_name!r}",
                        fix=f"use one of {', '.join(DATASET_NAMES)} (it picks the report cleaning and the image layout)")
    return dataset_name


class R2GenTokenizer:
    """Word-level tokenizer with R2Gen's cleaning; ``idx2token[i - 1]`` is the word of id ``i``."""

    def __init__(self, idx2token: list[str], dataset_name: str, threshold: int | None = None) -> None:
        if UNK not in idx2token:
            raise DataError(f"the vocabulary has no {UNK!r} token", fix="rebuild it with R2GenTokenizer.build")
        self.dataset_name = check_dataset_name(dataset_name)
        self.threshold = threshold
        self.idx2token = list(idx2token)
        self.token2idx = {token: i + 1 for i, token in enumerate(self.idx2token)}
        self.unk_id = self.token2idx[UNK]
        self.clean_report = CLEANERS[dataset_name]

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, reports: Iterable[str], *, threshold: int, dataset_name: str) -> "R2GenTokenizer":
        """Vocabulary of the words of ``reports`` (the training split) seen >= ``threshold`` times."""
        clean = CLEANERS[check_dataset_name(dataset_name)]
        counts: Counter[str] = Counter()
        for report in reports:
            counts.update(clean(report).split())
        words = sorted([w for w, n in counts.items() if n >= threshold] + [UNK])
        return cls(words, dataset_name, threshold)

    @classmethod
    def from_annotation(cls, path: str | Path, *, threshold: int, dataset_name: str) -> "R2GenTokenizer":
        """The vocabulary R2Gen itself builds at start-up from an ``annotation.json``."""
        from boxmed_eval.datasets.r2gen_annotation import read_r2gen_annotation

        entries = read_r2gen_annotation(Path(path))
        reports = [entry["report"] for split, _, entry in entries if split == "train"]
        if not reports:
            raise DataError("no 'train' entries to build the vocabulary from", file=path,
                            fix="pass the R2Gen annotation.json the checkpoint was trained with")
        return cls.build(reports, threshold=threshold, dataset_name=dataset_name)

    # ------------------------------------------------------------------ (de)serialising

    def to_dict(self) -> dict[str, Any]:
        return {"format": TOKENIZER_FORMAT, "version": 1, "dataset_name": self.dataset_name,
                "threshold": self.threshold, "idx2token": self.idx2token}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: object = None) -> "R2GenTokenizer":
        if not isinstance(data, dict) or data.get("format") != TOKENIZER_FORMAT or "idx2token" not in data:
            raise DataError("not an R2Gen tokenizer (expected {'format': 'r2gen-tokenizer', 'idx2token': [...]})",
                            file=source, fix="pass the tokenizer.json written by `boxmed-eval train r2gen`, "
                                             "or the R2Gen annotation.json the checkpoint was trained with")
        return cls(list(data["idx2token"]), data["dataset_name"], data.get("threshold"))

    def save(self, path: str | Path) -> None:
        from boxmed_eval.records import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "R2GenTokenizer":
        path = Path(path)
        data = read_json(path, what="tokenizer file")
        return cls.from_dict(data, source=path)

    # ------------------------------------------------------------------ use

    @property
    def vocab_size(self) -> int:
        """Number of words (``<unk>`` included); the model predicts ``vocab_size + 1`` classes."""
        return len(self.idx2token)

    def encode(self, report: str) -> list[int]:
        """``[0] + word ids + [0]`` as upstream (the 0s are bos and eos)."""
        ids = [self.token2idx.get(token, self.unk_id) for token in self.clean_report(report).split()]
        return [BOS_EOS_PAD_ID] + ids + [BOS_EOS_PAD_ID]

    __call__ = encode

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first 0 (eos/pad), joined by spaces."""
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id <= 0:
                break
            words.append(self.idx2token[token_id - 1])
        return " ".join(words)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]
