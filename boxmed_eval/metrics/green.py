"""GREEN (Ostmeier et al., EMNLP Findings 2024): an LLM judge counts clinically significant
errors in six categories and the matched findings; score = matched / (matched + errors).

The prompt is the published one (green_score's ``make_prompt``: reference and candidate each cut
to their first 300 words) and the judge input is rendered as green_score/RadEval feed it (see
``boxmed_eval.judges.hf.render_prompt``). Default judge: ``StanfordAIMI/GREEN-radllama2-7b``,
greedy decoding.

Per-sample columns (Figure 5's seven criteria, counts of clinically significant errors):

============================  =========================================================
``green``                     the GREEN score (NaN when the reply could not be parsed)
``green_false_finding``       (a) false report of a finding in the candidate
``green_missing_finding``     (b) missing a finding present in the reference
``green_wrong_location``      (c) misidentification of a finding's anatomic location/position
``green_wrong_severity``      (d) misassessment of the severity of a finding
``green_false_comparison``    (e) mentioning a comparison that isn't in the reference
``green_missing_comparison``  (f) omitting a comparison detailing a change from a prior study
``green_matched``             number of matched findings
============================  =========================================================

Parsing follows green_score: a section runs from ``[Name]:`` to the next blank line; a section
starting with "No" counts zero; error lines are ``(a) ...: N.`` (or ``(1)``..``(6)``); the matched
count is the number starting the ``[Matched Findings]`` section; score 0 when matched is 0.
Deliberate differences, so that nothing is silently scored 0: a count without its trailing
period is read (green_score reads 0), and a reply without the significant-errors or matched
section, without any (a)-(f) line, or with a count that is not a number is *unparseable*: NaN,
counted in ``green_parse_failures``, its raw reply kept in the judge cache and in the
``green_replies`` table.

Serving the judge with vLLM (``--judge http://127.0.0.1:8000/v1``): start it with a chat
template equivalent to green_score's, e.g. ``--chat-template`` pointing at a file holding
:data:`GREEN_SERVER_CHAT_TEMPLATE`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

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


def clean_green_reply(reply: str) -> str:
    """Drop an echoed conversation and special tokens (as green_score's ``clean_responses``)."""
    if "<|assistant|>" in reply:
        reply = reply.split("<|assistant|>")[-1]
    return reply.replace("</s>", "").replace("<unk>", "")


def _section(text: str, name: str) -> str | None:
    match = re.search(rf"\[{re.escape(name)}\]:?[ \t]*\n?\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    return match.group(1).strip() if match else None


def _count_after_colon(line: str) -> int:
    """The error count of a line ``(a) <type>: N. <errors>``."""
    _, colon, rest = line.partition(":")
    if not colon:
        rest = re.sub(r"^\(\w\)\s*", "", line)  # "(a) 2. ..." without the type
    rest = rest.strip()
    match = re.match(r"(\d+)(?![\d.]*\d)", rest) or re.match(r"(\d+)\b", rest)
    if match:
        return int(match.group(1))
    if re.match(r"(no|none|zero|n/a)\b", rest, re.IGNORECASE) or not rest:
        return 0
    raise _Unparseable(f"no error count in line {line.strip()[:80]!r}")


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
        if key in seen:  # a repeated letter: the first one counts
            continue
        seen.add(key)
        counts[keys.index(key)] = _count_after_colon(f"({key}) {rest}")
    return tuple(counts)


def parse_green_reply(reply: str) -> GreenJudgement:
    """Counts and score of one judge reply; ``problem`` says why when it cannot be parsed."""
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


@METRICS.register("green")
class GreenMetric(JudgedMetric):
    description = "GREEN: LLM-judged clinically significant errors (a)-(f) and matched findings, per sample"
    needs = (f"an LLM judge: {GREEN_DEFAULT_JUDGE} in the local HF cache, or --judge green=PATH (model folder) "
             "or --judge green=http://HOST:PORT/v1 (OpenAI-compatible server, e.g. vLLM)")
    provides = GREEN_COLUMNS + ("green_parse_failures",)
    default = False  # costs GPU time; requested with --metrics green or when --judge is given

    default_repo: ClassVar[str] = GREEN_DEFAULT_JUDGE
    default_max_new_tokens: ClassVar[int] = 1024
    default_dtype: ClassVar[str | None] = "float16"  # as green_score on GPU (ignored on CPU: float32)
    prompt_format: ClassVar[str] = "green"

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        prompts = [make_green_prompt(references[i], hypotheses[i]) for i in ids]
        replies = self.judge(prompts)
        judgements = [parse_green_reply(reply) for reply in replies]
        result = MetricResult(conventions={**self.conventions(), "green_words_per_report": GREEN_MAX_WORDS,
                                           "green_columns": "counts of significant errors (a)-(f), matched findings"})
        rows = [j.values() for j in judgements]
        for column in GREEN_COLUMNS:
            values = {i: row[column] for i, row in zip(ids, rows)}
            result.per_sample[column] = values
            finite = [v for v in values.values() if not math.isnan(v)]
            result.corpus[column] = float(sum(finite) / len(finite)) if finite else math.nan
        failures = [(i, j.problem, r) for i, j, r in zip(ids, judgements, replies) if not j.parsed]
        result.corpus["green_parse_failures"] = float(len(failures))
        result.tables["green_replies"] = pd.DataFrame(
            {"id": ids, "green": [row["green"] for row in rows], "parse_problem": [j.problem for j in judgements],
             "reply": replies})
        if failures:
            result.messages.append(f"green: {len(failures)} of {len(ids)} judge replies could not be parsed "
                                   f"(NaN; see green_replies.csv), e.g. {failures[0][0]}: {failures[0][1]}")
        return result
