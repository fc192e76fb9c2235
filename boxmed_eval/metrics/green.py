"""GREEN (Ostmeier et al., EMNLP Findings 2024): an LLM judge counts clinically significant
errors in six categories and the matched findings; score = matched / (matched + errors).

The prompt is the published one (green_score's ``make_prompt``: reference and candidate each cut
to their first 300 words) and the judge input is rendered as green_score/RadEval feed it (see
``boxmed_eval.judges.hf.render_prompt``). Default judge: ``StanfordAIMI/GREEN-radllama2-7b``,
greedy decoding.

Per-sample columns (Figure 5's seven criteria, counts of clinically significant errors):

============================  =========================================================
``green``                     the GREEN score (NaN only with green.parse=lenient, unparseable reply)
``green_false_finding``       (a) false report of a finding in the candidate
``green_missing_finding``     (b) missing a finding present in the reference
``green_wrong_location``      (c) misidentification of a finding's anatomic location/position
``green_wrong_severity``      (d) misassessment of the severity of a finding
``green_false_comparison``    (e) mentioning a comparison that isn't in the reference
``green_missing_comparison``  (f) omitting a comparison detailing a change from a prior study
``green_matched``             number of matched findings
============================  =========================================================

Parsing (``green.parse``):

* ``official`` (default): green_score's reading, quirks included (see the comment above
  :func:`clean_green_reply_official`). Every reply gets a number (an off-format reply usually 0), the
  corpus ``green`` is the mean over *all* replies, ``green_std`` is ``np.std`` of them, and
  ``green_zero_<category>`` is the share of samples with zero errors of that category (green_score's
  summary "accuracy"). Measured equal to green_score's own parsing on hand-worked cases
  (tests/test_green.py).
* ``lenient``: also reads ``(a)False``, ``:2.``, tabs, a count without its period, a header without a
  colon, ``(d) 3. Tube: malpositioned``; a reply without the significant-errors or matched section,
  without any (a)-(f) line, or with a count that is not a number is *unparseable*: NaN, counted in
  ``green_parse_failures`` and dropped from the mean; a repeated letter: the first line counts.

Either way ``green_readings_differ`` counts the replies the other parser reads differently and the
``green_replies`` table keeps both scores and the raw reply. The judge is asked for 1,024 new tokens
(green_score: 2,048 tokens in total, prompt included).

Serving the judge with vLLM (``--judge http://127.0.0.1:8000/v1``): start it with a chat
template equivalent to green_score's, e.g. ``--chat-template`` pointing at a file holding
:data:`GREEN_SERVER_CHAT_TEMPLATE`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from boxmed_eval.judges.metric import JudgedMetric
from boxmed_eval.metrics.base import METRICS, MetricResult
from boxmed_eval.records import Prediction, Study

GREEN_DEFAULT_JUDGE = "StanfordAIMI/GREEN-radllama2-7b"
GREEN_MAX_WORDS = 300

# (column suffix, letter, category as the prompt names it)
GREEN_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("false_finding", "a", "False report of a finding in the candidate"),
    ("missing_finding", "b", "Missing a finding present in the reference"),
    ("wrong_location", "c", "Misidentification of a finding's anatomic location/position"),
    ("wrong_severity", "d", "Misassessment of the severity of a finding"),
    ("false_comparison", "e", "Mentioning a comparison that isn't in the reference"),
    ("missing_comparison", "f", "Omitting a comparison detailing a change from a prior study"),
)
GREEN_COLUMNS = ("green",) + tuple(f"green_{name}" for name, _, _ in GREEN_CATEGORIES) + ("green_matched",)

# The published prompt, verbatim (its odd indentation included: the judge was trained on it).
_GREEN_PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology "
    "report composed by expert radiologists.\n\n"
    "    Process Overview: You will be presented with:\n\n"
    "    1. The criteria for making a judgment.\n"
    "    2. The reference radiology report.\n"
    "    3. The candidate radiology report.\n"
    "    4. The desired format for your assessment.\n\n"
    "    1. Criteria for Judgment:\n\n"
    "    For each candidate report, determine:\n\n"
    "    The count of clinically significant errors.\n"
    "    The count of clinically insignificant errors.\n\n"
    "    Errors can fall into one of these categories:\n\n"
    "    a) False report of a finding in the candidate.\n"
    "    b) Missing a finding present in the reference.\n"
    "    c) Misidentification of a finding's anatomic location/position.\n"
    "    d) Misassessment of the severity of a finding.\n"
    "    e) Mentioning a comparison that isn't in the reference.\n"
    "    f) Omitting a comparison detailing a change from a prior study.\n"
    "    Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only the "
    "findings that appear in both reports.\n\n"
    "    2. Reference Report:\n"
    "    {reference}\n\n"
    "    3. Candidate Report:\n"
    "    {candidate}\n\n"
    "    4. Reporting Your Assessment:\n\n"
    "    Follow this specific format for your output, even if no errors are found:\n"
    "    ```\n"
    "    [Explanation]:\n"
    "    <Explanation>\n\n"
    "    [Clinically Significant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n"
    "    ....\n"
    "    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
    "    [Clinically Insignificant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n"
    "    ....\n"
    "    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
    "    [Matched Findings]:\n"
    "    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n"
    "    ```\n"
)

# green_score's chat template in role/content form, for an OpenAI-compatible server (vLLM
# ``--chat-template``): renders what the local backend feeds the model.
GREEN_SERVER_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' + eos_token + '\\n<|assistant|>\\n' + eos_token }}{% endif %}"
)


def truncate_words(text: str, max_words: int = GREEN_MAX_WORDS) -> str:
    """The first ``max_words`` whitespace-separated words, joined by single spaces."""
    return " ".join(text.split()[:max_words])


def make_green_prompt(reference: str, candidate: str, max_words: int = GREEN_MAX_WORDS) -> str:
    """GREEN's published prompt for one pair (both reports cut to ``max_words`` words)."""
    return _GREEN_PROMPT.format(reference=truncate_words(reference, max_words),
                                candidate=truncate_words(candidate, max_words))


@dataclass
class GreenJudgement:
    """One parsed GREEN reply. ``errors`` holds the six significant-error counts (a)-(f)."""

    score: float
    errors: tuple[int, ...] = ()
    matched: int | None = None
    problem: str = ""  # why the reply could not be parsed ("" when it could)
    insignificant: tuple[int, ...] = field(default=())

    @property
    def parsed(self) -> bool:
        return not self.problem

    def values(self) -> dict[str, float]:
        """The per-sample columns (NaN everywhere when unparseable)."""
        if not self.parsed:
            return {column: math.nan for column in GREEN_COLUMNS}
        row = {"green": self.score, "green_matched": float(self.matched or 0)}
        for (name, _, _), count in zip(GREEN_CATEGORIES, self.errors):
            row[f"green_{name}"] = float(count)
        return row


class _Unparseable(ValueError):
    pass


# --- the official reading (green_score's ``clean_responses`` and ``GREEN.parse_error_counts``) ---------
# Re-implemented from its documented regex behaviour; every quirk below is green_score's and is kept so
# that ``green`` equals what the official package prints:
# * a section is ``[Name]:`` (colon required, then any whitespace) up to the first blank line or the end;
#   a missing section reads as zero counts (so a missing [Matched Findings] scores 0, never NaN);
# * a section whose text starts with "No" counts zero;
# * the matched count is digits at the very start of the section followed by a period ("2." yes, "2" no);
# * error lines are every "(x) " (letter a-f then one space) to the end of its line, anywhere in the
#   section, sorted as strings; a count is the first "N." preceded by ": " (exactly colon+space) and the
#   last sorted line of a letter that has one wins (so a repeated letter: the lexicographically last);
#   "(1) ".."(6) " only when no letter line exists;
# * text up to the first ``[Explanation]:`` is dropped (its last one when the reply does not echo the
#   template); an echoed conversation is cut at the last ``<|assistant|>``.

_OFFICIAL_SECTION = r"\[{name}\]:\s*(.*?)(?:\n\s*\n|\Z)"
_OFFICIAL_COUNT = re.compile(r"(?<=: )\b\d+\b(?=\.)")
_OFFICIAL_MATCHED = re.compile(r"^\b\d+\b(?=\.)")
# green_score tests ``("[Explanation]:\n    <Explanation>\n" or ...) in response``: Python's ``or``
# yields the first string, so only this literal (an echoed prompt template) is looked for.
_ECHOED_TEMPLATE = "[Explanation]:\n    <Explanation>\n"


def clean_green_reply_official(reply: str) -> str:
    """green_score's ``clean_responses``: cut an echo, keep what follows ``[Explanation]:``."""
    if "[Explanation]:" in reply:
        if "<|assistant|>" in reply:
            reply = reply.split("<|assistant|>")[-1]
        pieces = reply.split("[Explanation]:")
        reply = pieces[1] if _ECHOED_TEMPLATE in reply else pieces[-1]
    if "<|assistant|>" in reply:
        reply = reply.split("<|assistant|>")[-1]
    return reply.replace("</s>", "").replace("<unk>", "")


def _official_section(text: str, name: str) -> str | None:
    match = re.search(_OFFICIAL_SECTION.format(name=name), text, re.DOTALL)
    return match.group(1) if match else None


def _official_error_counts(body: str | None) -> tuple[int, ...]:
    counts = [0] * 6
    if body is None or body.startswith("No"):
        return tuple(counts)
    lines = sorted(re.findall(r"\([a-f]\) .*", body))
    prefixes = [f"({key}) " for key in "abcdef"]
    if not lines:
        lines = sorted(re.findall(r"\([1-6]\) .*", body))
        prefixes = [f"({key}) " for key in "123456"]
    for position, prefix in enumerate(prefixes):
        for line in lines:  # sorted: the last line of a letter that carries a count wins
            if line.startswith(prefix):
                found = _OFFICIAL_COUNT.findall(line)
                if found:
                    counts[position] = int(found[0])
    return tuple(counts)


def _official_matched(body: str | None) -> int:
    if body is None or body.startswith("No"):
        return 0
    found = _OFFICIAL_MATCHED.findall(body)
    return int(found[0]) if found else 0


def parse_green_reply_official(reply: str) -> GreenJudgement:
    """The reply as green_score reads it: always a number (an off-format reply usually scores 0)."""
    text = clean_green_reply_official(reply or "")
    errors = _official_error_counts(_official_section(text, "Clinically Significant Errors"))
    matched = _official_matched(_official_section(text, "Matched Findings"))
    insignificant = _official_error_counts(_official_section(text, "Clinically Insignificant Errors"))
    score = 0.0 if matched == 0 else matched / (matched + sum(errors))
    return GreenJudgement(score=score, errors=errors, matched=matched, insignificant=insignificant)


# --- the lenient reading (``green.parse=lenient``) -----------------------------------------------------

def clean_green_reply(reply: str) -> str:
    """Drop an echoed conversation and special tokens (lenient mode: keeps text before [Explanation])."""
    if "<|assistant|>" in reply:
        reply = reply.split("<|assistant|>")[-1]
    return reply.replace("</s>", "").replace("<unk>", "")


def _section(text: str, name: str) -> str | None:
    match = re.search(rf"\[{re.escape(name)}\]:?[ \t]*\n?\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    return match.group(1).strip() if match else None


def _read_count(rest: str) -> int | None:
    rest = rest.strip()
    match = re.match(r"(\d+)(?![\d.]*\d)", rest) or re.match(r"(\d+)\b", rest)
    if match:
        return int(match.group(1))
    if re.match(r"(no|none|zero|n/a)\b", rest, re.IGNORECASE) or not rest:
        return 0
    return None


def _count_after_colon(line: str) -> int:
    """The error count of a line ``(a) <type>: N. <errors>`` or ``(a) N. <errors>``."""
    after_key = re.sub(r"^\(\w\)\s*", "", line)
    # "(d) 3. Tube: malpositioned": the count comes first and the colon belongs to the description
    leading = re.match(r"(\d+)\b", after_key)
    if leading:
        return int(leading.group(1))
    _, colon, rest = after_key.partition(":")
    count = _read_count(rest if colon else after_key)
    if count is None:
        raise _Unparseable(f"no error count in line {line.strip()[:80]!r}")
    return count


def _error_counts(body: str, section: str) -> tuple[int, ...]:
    if body.startswith("No"):  # "No clinically significant errors." (green_score's rule)
        return (0,) * 6
    lines = re.findall(r"^\s*\(([a-f])\)\s*(.*)$", body, re.MULTILINE)
    keys = "abcdef"
    if not lines:  # some judges number the categories (1)..(6)
        lines = re.findall(r"^\s*\(([1-6])\)\s*(.*)$", body, re.MULTILINE)
        keys = "123456"
    if not lines:
        raise _Unparseable(f"no (a)-(f) lines in the [{section}] section")
    counts = [0] * 6
    seen: set[str] = set()
    for key, rest in lines:
        if key in seen:  # a repeated letter: the first one counts (official: the last after sorting)
            continue
        seen.add(key)
        counts[keys.index(key)] = _count_after_colon(f"({key}) {rest}")
    return tuple(counts)


def parse_green_reply_lenient(reply: str) -> GreenJudgement:
    """Counts and score of one judge reply; ``problem`` says why when it cannot be parsed.

    More lenient than green_score (spacing, a missing colon or period) and stricter about off-format
    replies (NaN instead of 0)."""
    text = clean_green_reply(reply or "")
    try:
        significant = _section(text, "Clinically Significant Errors")
        if significant is None:
            raise _Unparseable("no [Clinically Significant Errors] section")
        matched_body = _section(text, "Matched Findings")
        if matched_body is None:
            raise _Unparseable("no [Matched Findings] section")
        errors = _error_counts(significant, "Clinically Significant Errors")
        if matched_body.startswith("No"):
            matched = 0
        else:
            number = re.match(r"(\d+)\b", matched_body)
            if number is None:
                raise _Unparseable(f"no count at the start of [Matched Findings]: {matched_body[:80]!r}")
            matched = int(number.group(1))
        insignificant_body = _section(text, "Clinically Insignificant Errors")
        try:
            insignificant = _error_counts(insignificant_body, "") if insignificant_body else ()
        except _Unparseable:  # not part of the score
            insignificant = ()
    except _Unparseable as exc:
        return GreenJudgement(score=math.nan, problem=str(exc))
    score = 0.0 if matched == 0 else matched / (matched + sum(errors))
    return GreenJudgement(score=score, errors=errors, matched=matched, insignificant=insignificant)


GREEN_PARSERS = {"official": parse_green_reply_official, "lenient": parse_green_reply_lenient}


def parse_green_reply(reply: str, parse: str = "official") -> GreenJudgement:
    """One reply read the ``official`` (green_score, default) or ``lenient`` way."""
    try:
        parser = GREEN_PARSERS[parse]
    except KeyError:
        raise ValueError(f"green.parse={parse!r} is not known; use one of {', '.join(GREEN_PARSERS)}") from None
    return parser(reply)


@METRICS.register("green")
class GreenMetric(JudgedMetric):
    description = "GREEN: LLM-judged clinically significant errors (a)-(f) and matched findings, per sample"
    needs = (f"an LLM judge: {GREEN_DEFAULT_JUDGE} in the local HF cache, or --judge green=PATH (model folder) "
             "or --judge green=http://HOST:PORT/v1 (OpenAI-compatible server, e.g. vLLM)")
    provides = GREEN_COLUMNS + ("green_std", "green_parse_failures", "green_readings_differ") + tuple(
        f"green_zero_{name}" for name, _, _ in GREEN_CATEGORIES)
    default = False  # costs GPU time; requested with --metrics green or when --judge is given

    default_repo: ClassVar[str] = GREEN_DEFAULT_JUDGE
    # green_score truncates the prompt to 2,048 tokens and generates up to max_length=2048 tokens *in
    # total* (prompt + reply): a local judge does the same, per prompt (green_score's padded batches
    # give a prompt the budget of its batch's longest one, which makes a score depend on its
    # batch-mates; the budget here is the one green_score gives at batch size 1). A server cannot be
    # told a total, so there 1,024 new tokens (a GREEN prompt is ~600-900 tokens) approximates it.
    default_max_total_tokens: ClassVar[int | None] = 2048
    default_max_new_tokens: ClassVar[int] = 1024
    default_dtype: ClassVar[str | None] = "float16"  # as green_score on GPU (ignored on CPU: float32)
    prompt_format: ClassVar[str] = "green"

    def __init__(self, **options: object) -> None:
        # ``green.parse``: "official" (green_score's reading, default) or "lenient"
        self.parse = str(options.get("parse") or "official")
        if self.parse not in GREEN_PARSERS:
            raise ValueError(f"green.parse={self.parse!r} is not known; use one of {', '.join(GREEN_PARSERS)}")
        super().__init__(**{k: v for k, v in options.items() if k != "parse"})
        self.options = dict(options)  # with "parse", so that a metric rebuilt from its options reads alike

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        prompts = [make_green_prompt(references[i], hypotheses[i]) for i in ids]
        replies = self.judge(prompts)
        judgements = [parse_green_reply(reply, self.parse) for reply in replies]
        other = "lenient" if self.parse == "official" else "official"
        others = [parse_green_reply(reply, other) for reply in replies]
        result = MetricResult(conventions={**self.conventions(), "green_words_per_report": GREEN_MAX_WORDS,
                                           "green_parse": self.parse,
                                           "green_mean": ("over every reply (as green_score)" if self.parse == "official"
                                                          else "over parseable replies (NaN dropped)"),
                                           "green_columns": "counts of significant errors (a)-(f), matched findings"})
        rows = [j.values() for j in judgements]
        for column in GREEN_COLUMNS:
            values = {i: row[column] for i, row in zip(ids, rows)}
            result.per_sample[column] = values
            finite = [v for v in values.values() if not math.isnan(v)]
            result.corpus[column] = float(sum(finite) / len(finite)) if finite else math.nan
        scores = [row["green"] for row in rows if not math.isnan(row["green"])]
        # np.std as green_score: population standard deviation (ddof=0)
        result.corpus["green_std"] = float(np.std(scores)) if scores else math.nan
        for name, _, _ in GREEN_CATEGORIES:  # green_score's per-category "accuracy": share with zero errors
            counts = [row[f"green_{name}"] for row in rows if not math.isnan(row[f"green_{name}"])]
            result.corpus[f"green_zero_{name}"] = (float(np.mean([c == 0 for c in counts])) if counts
                                                    else math.nan)
        failures = [(i, j.problem, r) for i, j, r in zip(ids, judgements, replies) if not j.parsed]
        result.corpus["green_parse_failures"] = float(len(failures))
        differ = [i for i, j, o in zip(ids, judgements, others) if not _same_reading(j, o)]
        result.corpus["green_readings_differ"] = float(len(differ))
        result.tables["green_replies"] = pd.DataFrame(
            {"id": ids, "green": [row["green"] for row in rows], f"green_{other}": [o.score for o in others],
             "parse_problem": [j.problem for j in judgements], "reply": replies})
        if failures:
            result.messages.append(f"green: {len(failures)} of {len(ids)} judge replies could not be parsed "
                                   f"(NaN; see green_replies.csv), e.g. {failures[0][0]}: {failures[0][1]}")
        if differ:
            result.messages.append(f"green: the {other} parser reads {len(differ)} of {len(ids)} replies "
                                   f"differently (green_replies.csv, column green_{other}), e.g. {differ[0]}")
        return result


def _same_reading(a: GreenJudgement, b: GreenJudgement) -> bool:
    if math.isnan(a.score) or math.isnan(b.score):
        return math.isnan(a.score) and math.isnan(b.score)
    return a.score == b.score and a.errors == b.errors and a.matched == b.matched
