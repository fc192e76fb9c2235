"""GEMA-Score: gemascore's prompt and parser, batched through a backend, sub-scores per
sample, NaN for unparseable replies, cached replies."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence

import pytest

pytest.importorskip("gemascore")

from boxmed_eval.judges.base import GenerationSettings, JudgeBackend  # noqa: E402
from boxmed_eval.metrics.base import METRICS  # noqa: E402
from boxmed_eval.metrics.gema import GEMA_FIELDS, GemaMetric, build_gema_prompt, parse_gema_reply  # noqa: E402


def gema_json(score: float, **overrides: object) -> str:
    data: dict[str, object] = {
        "entity_name false_prediction": 1, "entity_name false_prediction_explanation": "pneumothorax",
        "entity_name omission": 2, "entity_name omission_explanation": "effusion; edema",
        "location false_prediction": 0, "location false_prediction_explanation": "",
        "location omission": 1, "location omission_explanation": "left",
        "severity false_prediction": 0, "severity false_prediction_explanation": "",
        "severity omission": 0, "severity omission_explanation": "",
        "uncertainty false_prediction": 0, "uncertainty false_prediction_explanation": "",
        "uncertainty omission": 1, "uncertainty omission_explanation": "possible",
        "completeness_score": 0.6, "completeness_reason": "misses effusion",
        "readability_score": 0.9, "readability_reason": "clear",
        "clinical_utility_score": 0.5, "clinical_utility_reason": "",
        "weighted_final_score": score,
    }
    data.update(overrides)
    return json.dumps(data)


def test_prompt_is_gemascores():
    from gemascore.prompt import build_prompt

    prompt = build_gema_prompt("Reference text.", "Candidate text.")
    assert prompt == build_prompt(candidate_report="Candidate text.", reference_report="Reference text.")
    assert 'candidate radiology report: Candidate text. reference radiology report: Reference text."' in prompt


def test_parse_with_and_without_output_anchor():
    row, problem = parse_gema_reply("output: " + gema_json(0.55) + "\nextra text")
    assert problem == ""
    assert row["gema_score"] == 0.55 and row["gema_entity_omission"] == 2 and row["gema_readability"] == 0.9
    assert set(row) == set(GEMA_FIELDS)
    row, problem = parse_gema_reply(gema_json(0.4))  # servers return only the completion
    assert problem == "" and row["gema_score"] == 0.4 and row["gema_uncertainty_omission"] == 1


def test_string_numbers_and_missing_sub_scores():
    row, problem = parse_gema_reply("output: " + gema_json("0.7", **{"readability_score": "n/a"}))
    assert problem == "" and row["gema_score"] == 0.7 and math.isnan(row["gema_readability"])


@pytest.mark.parametrize("reply, problem", [
    ("", "empty"),
    ("The candidate is mostly right.", "'{'"),
    ('output: {"weighted_final_score": 0.5, "completeness_score": ', "parse JSON"),
    ("output: " + json.dumps({"completeness_score": 0.5}), "weighted_final_score"),
    ("output: [1, 2]", "'{'"),
    # a percentage is refused, not read as 47.0 (off the 0-1 scale) nor silently divided by 100
    ("output: " + gema_json("47%"), "percentage"),
    ("output: " + gema_json(47), "outside its 0-1 scale"),
    ("output: " + gema_json(-0.1), "outside its 0-1 scale"),
])
def test_unparseable_replies(reply, problem):
    row, why = parse_gema_reply(reply)
    assert why and (problem in why), why
    assert all(math.isnan(v) for v in row.values())


class CannedJudge(JudgeBackend):
    kind = "canned"

    def __init__(self, replies: dict[str, str], calls: list[tuple[str, GenerationSettings]]) -> None:
        self.replies, self.calls = replies, calls

    @property
    def identity(self) -> str:
        return "canned-gema"

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        for index, prompt in reversed(list(enumerate(prompts))):  # out of order on purpose
            self.calls.append((prompt, settings))
            yield index, next(v for k, v in self.replies.items() if k in prompt)


def test_metric_batches_parses_and_caches(tmp_path, monkeypatch):
    replies = {"CAND-a": "output: " + gema_json(0.8), "CAND-b": gema_json(0.3, **{"entity_name omission": 4}),
               "CAND-c": "no json here"}
    calls: list[tuple[str, GenerationSettings]] = []
    monkeypatch.setattr(GemaMetric, "make_backend", lambda self: CannedJudge(replies, calls))
    refs = {"a": "ref a", "b": "ref b", "c": "ref c", "d": "ref a"}
    hyps = {"a": "CAND-a", "b": "CAND-b", "c": "CAND-c", "d": "CAND-a"}  # d repeats a's pair
    result = GemaMetric(judge="canned/gema", cache_dir=str(tmp_path)).compute(refs, hyps)
    assert len(calls) == 3  # the duplicate pair is judged once
    settings = calls[0][1]
    assert settings.prompt_format == "raw" and settings.repetition_penalty == 1.2 and settings.max_new_tokens == 2048
    scores = result.per_sample["gema_score"]
    assert scores["a"] == 0.8 and scores["b"] == 0.3 and math.isnan(scores["c"]) and scores["d"] == 0.8
    assert result.per_sample["gema_entity_omission"]["b"] == 4
    assert result.corpus["gema_score"] == pytest.approx((0.8 + 0.3 + 0.8) / 3)
    assert result.corpus["gema_parse_failures"] == 1.0
    assert result.tables["gema_replies"].set_index("id").loc["c", "reply"] == "no json here"

    monkeypatch.setattr(GemaMetric, "make_backend", lambda self: pytest.fail("backend built on a cached re-score"))
    again = GemaMetric(judge="canned/gema", cache_dir=str(tmp_path)).compute(refs, hyps)
    assert again.per_sample["gema_score"] == pytest.approx(scores, nan_ok=True)


def test_registered_not_default_and_unavailable_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert METRICS.get("gema") is GemaMetric and not GemaMetric.default
    ok, reason = GemaMetric().available()
    assert not ok and "GEMA-Score-distilled-Xray-Qwen" in reason and "--judge gema=" in reason


def test_server_judge_uses_the_completions_endpoint_by_default():
    from boxmed_eval.judges.openai import OpenAIJudge

    def api_of(**options) -> str:
        metric = GemaMetric(judge="http://127.0.0.1:9/v1", judge_model="m", dataset="iu_xray", **options)
        backend = metric.make_backend()
        assert isinstance(backend, OpenAIJudge)
        return backend.api

    assert api_of() == "completions"  # gemascore applies no chat template
    assert api_of(judge_api="chat") == "chat"
    assert GemaMetric(judge="canned/gema").conventions()["gema_judge_api"] == "completions"
