"""GREEN: the published prompt, the reply parser on hand-written replies, the metric's
per-sample columns, NaN for unparseable replies, and the cache (second scoring asks nothing)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from boxmed_eval.judges.base import GenerationSettings, JudgeBackend
from boxmed_eval.metrics.base import METRICS, compute_metrics
from boxmed_eval.metrics.green import (GREEN_COLUMNS, GreenMetric, make_green_prompt, parse_green_reply,
                                       parse_green_reply_lenient, parse_green_reply_official, truncate_words)

BOTH = pytest.mark.parametrize("parse", ["official", "lenient"])

WELL_FORMED = """[Explanation]:
The candidate misses the effusion and reports a pneumothorax that is not in the reference.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 1. Pneumothorax.
(b) Missing a finding present in the reference: 1. Left pleural effusion.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 1. Degenerative changes of the spine.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Matched Findings]:
2. Cardiomegaly; Pulmonary edema.
"""


@BOTH
def test_well_formed_reply(parse):
    judgement = parse_green_reply(WELL_FORMED, parse)
    assert judgement.parsed
    assert judgement.errors == (1, 1, 0, 0, 0, 0)
    assert judgement.matched == 2
    assert judgement.insignificant == (0, 1, 0, 0, 0, 0)
    assert judgement.score == pytest.approx(2 / (2 + 2))
    row = judgement.values()
    assert row["green_false_finding"] == 1 and row["green_missing_finding"] == 1 and row["green_matched"] == 2
    assert set(row) == set(GREEN_COLUMNS)


@BOTH
def test_no_errors_reply_scores_one(parse):
    reply = ("[Explanation]:\nBoth agree.\n\n[Clinically Significant Errors]:\nNo clinically significant errors.\n\n"
             "[Clinically Insignificant Errors]:\nNo clinically insignificant errors.\n\n[Matched Findings]:\n"
             "3. Cardiomegaly; Edema; Effusion.")
    judgement = parse_green_reply(reply, parse)
    assert judgement.errors == (0,) * 6 and judgement.matched == 3 and judgement.score == 1.0


def test_zero_matched_scores_zero_even_without_errors():
    reply = "[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: 0.\n\n[Matched Findings]:\n0."
    judgement = parse_green_reply_lenient(reply)
    assert judgement.parsed and judgement.matched == 0 and judgement.score == 0.0
    reply_no = "[Clinically Significant Errors]:\n(b) Missing a finding present in the reference: 2.\n\n[Matched Findings]:\nNone."
    judgement = parse_green_reply_lenient(reply_no)
    assert judgement.parsed and judgement.errors[1] == 2 and judgement.score == 0.0


def test_counts_without_trailing_period_are_read():
    # green_score would read these as 0 (its regex needs "N."); silently 0 is what we avoid
    reply = ("[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: 2\n"
             "(d) Misassessment of the severity of a finding: 1 (mild vs moderate)\n\n[Matched Findings]:\n4")
    judgement = parse_green_reply_lenient(reply)
    assert judgement.errors == (2, 0, 0, 1, 0, 0)
    assert judgement.matched == 4
    assert judgement.score == pytest.approx(4 / 7)


@BOTH
def test_numbered_categories_and_unordered_lines(parse):
    reply = ("[Clinically Significant Errors]:\n(3) Misidentification of location: 1.\n(1) False report: 2.\n\n"
             "[Matched Findings]:\n1. Effusion.")
    judgement = parse_green_reply(reply, parse)
    assert judgement.errors == (2, 0, 1, 0, 0, 0) and judgement.score == pytest.approx(1 / 4)


@BOTH
def test_echoed_conversation_is_cut(parse):
    reply = "<|user|>\n(prompt)</s>\n<|assistant|>\n" + WELL_FORMED + "</s>"
    assert parse_green_reply(reply, parse).score == pytest.approx(0.5)


@pytest.mark.parametrize("reply, problem", [
    ("", "Clinically Significant Errors"),
    ("The reports agree well. Score: 8/10.", "Clinically Significant Errors"),
    ("[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: 1.\n", "Matched Findings"),
    ("[Matched Findings]:\n2. Edema; effusion.", "Clinically Significant Errors"),
    ("[Clinically Significant Errors]:\nThere is one error.\n\n[Matched Findings]:\n2.", "(a)-(f)"),
    ("[Clinically Significant Errors]:\n(a) False report: several.\n\n[Matched Findings]:\n2.", "no error count"),
    ("[Clinically Significant Errors]:\n(a) False report: 1.\n\n[Matched Findings]:\nCardiomegaly.", "Matched"),
])
def test_unparseable_replies_are_nan_with_a_reason(reply, problem):
    judgement = parse_green_reply_lenient(reply)
    assert not judgement.parsed
    assert problem in judgement.problem
    assert math.isnan(judgement.score)
    assert all(math.isnan(v) for v in judgement.values().values())


def test_prompt_is_the_published_one_and_cuts_reports_to_300_words():
    reference = " ".join(f"r{i}" for i in range(400))
    candidate = "Heart   size is\nnormal."
    prompt = make_green_prompt(reference, candidate)
    assert prompt.startswith("Objective: Evaluate the accuracy of a candidate radiology report in comparison to a "
                             "reference radiology report composed by expert radiologists.\n\n    Process Overview:")
    assert "    2. Reference Report:\n    " + truncate_words(reference) + "\n\n    3. Candidate Report:\n    " \
        "Heart size is normal.\n\n    4. Reporting Your Assessment:" in prompt
    assert "r299" in prompt and "r300" not in prompt
    assert "    [Matched Findings]:\n    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; " \
        "<Finding n>\n    ```\n" in prompt
    for letter, text in zip("abcdef", ("False report of a finding in the candidate.",
                                       "Missing a finding present in the reference.",
                                       "Misidentification of a finding's anatomic location/position.",
                                       "Misassessment of the severity of a finding.",
                                       "Mentioning a comparison that isn't in the reference.",
                                       "Omitting a comparison detailing a change from a prior study.")):
        assert f"    {letter}) {text}\n" in prompt


class CannedJudge(JudgeBackend):
    """Answers from a dict keyed by a marker in the prompt; records every call."""

    kind = "canned"

    def __init__(self, replies: dict[str, str], calls: list[str]) -> None:
        self.replies = replies
        self.calls = calls

    @property
    def identity(self) -> str:
        return "canned-green"

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        assert settings.prompt_format == "green"
        for index, prompt in enumerate(prompts):
            self.calls.append(prompt)
            marker = next(key for key in self.replies if key in prompt)
            yield index, self.replies[marker]


def _reply(errors: tuple[int, ...], matched: int) -> str:
    lines = "\n".join(f"({letter}) category: {count}." for letter, count in zip("abcdef", errors))
    return f"[Explanation]:\nx\n\n[Clinically Significant Errors]:\n{lines}\n\n[Matched Findings]:\n{matched}. x"


def test_metric_per_sample_corpus_failures_and_cache(tmp_path, monkeypatch):
    replies = {"CAND-1": _reply((1, 0, 0, 0, 0, 0), 3), "CAND-2": _reply((0, 2, 1, 0, 0, 1), 0),
               "CAND-3": "I cannot evaluate this.", "CAND-4": _reply((0,) * 6, 2)}
    calls: list[str] = []
    monkeypatch.setattr(GreenMetric, "make_backend", lambda self: CannedJudge(replies, calls))
    refs = {f"s{i}": f"Reference report {i}." for i in range(1, 5)}
    hyps = {f"s{i}": f"CAND-{i} report." for i in range(1, 5)}

    metric = GreenMetric(judge="canned/green", cache_dir=str(tmp_path))
    result = metric.compute(refs, hyps)
    assert len(calls) == 4
    green = result.per_sample["green"]
    # official reading: the off-format reply scores 0 and the mean is over all four replies
    assert green["s1"] == pytest.approx(0.75) and green["s2"] == 0.0 and green["s3"] == 0.0 and green["s4"] == 1.0
    assert result.corpus["green"] == pytest.approx((0.75 + 0.0 + 0.0 + 1.0) / 4)
    assert result.corpus["green_std"] == pytest.approx(float(np.std([0.75, 0.0, 0.0, 1.0])))
    assert result.corpus["green_zero_false_finding"] == pytest.approx(3 / 4)
    assert result.corpus["green_zero_missing_finding"] == pytest.approx(3 / 4)
    assert result.corpus["green_zero_wrong_severity"] == 1.0
    assert result.corpus["green_parse_failures"] == 0.0
    assert result.corpus["green_readings_differ"] == 1.0  # s3: lenient reads NaN
    assert result.conventions["green_parse"] == "official"
    assert result.per_sample["green_missing_comparison"]["s2"] == 1.0
    assert result.per_sample["green_matched"]["s1"] == 3.0
    table = result.tables["green_replies"]
    assert table.loc[table["id"] == "s3", "reply"].item() == "I cannot evaluate this."
    assert math.isnan(table.loc[table["id"] == "s3", "green_lenient"].item())
    assert any("reads 1 of 4 replies differently" in m for m in result.messages)

    lenient = GreenMetric(judge="canned/green", cache_dir=str(tmp_path), parse="lenient").compute(refs, hyps)
    green = lenient.per_sample["green"]
    assert green["s1"] == pytest.approx(0.75) and green["s2"] == 0.0 and math.isnan(green["s3"]) and green["s4"] == 1.0
    assert lenient.corpus["green"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert lenient.corpus["green_parse_failures"] == 1.0
    assert lenient.corpus["green_missing_finding"] == pytest.approx(2 / 3)
    assert any("could not be parsed" in m for m in lenient.messages)
    assert len(calls) == 4  # the second parser re-reads the cached replies
    assert (tmp_path / "judge_cache.jsonl").is_file()

    # second scoring: everything from the cache, no backend built, no call made
    monkeypatch.setattr(GreenMetric, "make_backend", lambda self: pytest.fail("backend built on a cached re-score"))
    again = GreenMetric(judge="canned/green", cache_dir=str(tmp_path)).compute(refs, hyps)
    assert again.per_sample["green"]["s1"] == pytest.approx(0.75) and again.per_sample["green"]["s3"] == 0.0
    assert len(calls) == 4


def test_metric_registered_not_default_and_unavailable_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert METRICS.get("green") is GreenMetric and GreenMetric.default is False
    ok, reason = GreenMetric().available()
    assert not ok and "StanfordAIMI/GREEN-radllama2-7b" in reason and "--judge green=" in reason
    # a run that asks for it keeps its other metrics and says why
    result = compute_metrics(["green"], {"a": "x"}, {"a": "y"})
    assert result.corpus == {} and "--judge green=" in result.messages[0]


# --- green_score's own reading, quirks included -----------------------------------------------------
# Each expected value is worked out from green_score's regexes (green_score/green.py
# ``parse_error_counts`` and utils.py ``clean_responses``) and was checked against that code.
A = "(a) False report of a finding in the candidate"
B = "(b) Missing a finding present in the reference"
C = "(c) Misidentification of a finding's anatomic location/position"
SIG = "[Clinically Significant Errors]:\n"
INSIG = "[Clinically Insignificant Errors]:\n"
MATCHED2 = "\n\n[Matched Findings]:\n2. Cardiomegaly; Edema."

OFFICIAL_CASES = [
    # (reply, official (errors, matched, score), lenient score)
    pytest.param(SIG + f"(a)False report of a finding in the candidate: 1.\n{B}: 1." + MATCHED2,
                 ((0, 1, 0, 0, 0, 0), 2, 2 / 3), 0.5, id="no-space-after-letter"),
    pytest.param(SIG + f"{B}:2. Effusion." + MATCHED2, ((0,) * 6, 2, 1.0), 0.5, id="colon-without-space"),
    pytest.param(SIG + f"{C}:\t1. Left." + MATCHED2, ((0,) * 6, 2, 1.0), 2 / 3, id="tab-after-colon"),
    pytest.param(SIG + f"{A}: 2" + MATCHED2, ((0,) * 6, 2, 1.0), 0.5, id="count-without-period"),
    pytest.param("[Clinically Significant Errors]\n" + f"{A}: 1." + MATCHED2, ((0,) * 6, 2, 1.0), 2 / 3,
                 id="header-without-colon"),
    # sorted as strings, the last line of a letter wins: ": 2." sorts after ": 1."
    pytest.param(SIG + f"{A}: 1. Effusion.\n{A}: 2. Edema; nodule." + MATCHED2, ((2, 0, 0, 0, 0, 0), 2, 0.5),
                 2 / 3, id="repeated-letter"),
    # no blank line: the insignificant errors are read as significant ones
    pytest.param(SIG + f"{A}: 1.\n" + INSIG + f"{B}: 3." + MATCHED2, ((1, 3, 0, 0, 0, 0), 2, 2 / 6), 2 / 6,
                 id="sections-not-separated"),
    # only what follows the last [Explanation]: counts
    pytest.param(SIG + f"{A}: 5." + "\n\n[Matched Findings]:\n1. x.\n\n[Explanation]:\nagain\n\n" + SIG
                 + f"{A}: 1." + "\n\n[Matched Findings]:\n3. x.", ((1, 0, 0, 0, 0, 0), 3, 0.75), 1 / 6,
                 id="text-before-last-explanation"),
    # the count first, a colon in the description: official reads no "': N.'" (0); lenient reads 3
    pytest.param(SIG + f"{A}: 0.\n(d) 3. Tube: malpositioned." + "\n\n[Matched Findings]:\n1. Effusion.",
                 ((0,) * 6, 1, 1.0), 0.25, id="count-then-colon-in-description"),
    pytest.param("I cannot evaluate this.", ((0,) * 6, 0, 0.0), math.nan, id="off-format"),
    pytest.param(SIG + f"{A}: 1.", ((1, 0, 0, 0, 0, 0), 0, 0.0), math.nan, id="no-matched-section"),
    pytest.param(SIG + f"{A}: 1." + "\n\n[Matched Findings]:\n2 findings: edema, effusion",
                 ((1, 0, 0, 0, 0, 0), 0, 0.0), 2 / 3, id="matched-without-period"),
    pytest.param(f"{A}: 1." + MATCHED2, ((0,) * 6, 2, 1.0), math.nan, id="no-significant-section"),
]


@pytest.mark.parametrize("reply, official, lenient", OFFICIAL_CASES)
def test_official_reading_and_lenient_variant(reply, official, lenient):
    errors, matched, score = official
    judgement = parse_green_reply_official(reply)
    assert judgement.errors == errors and judgement.matched == matched
    assert judgement.score == pytest.approx(score)
    assert parse_green_reply(reply).score == judgement.score  # official is the default
    other = parse_green_reply_lenient(reply).score
    assert (math.isnan(other) and math.isnan(lenient)) or other == pytest.approx(lenient)


def test_unknown_parse_mode_is_refused():
    with pytest.raises(ValueError, match="lenient"):
        GreenMetric(parse="strict")
    with pytest.raises(ValueError, match="official"):
        parse_green_reply("x", "strict")
