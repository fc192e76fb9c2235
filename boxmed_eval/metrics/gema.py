"""GEMA-Score (Zhang et al., 2025): an LLM judge returns a JSON object of granular error counts
and quality scores, including its own ``weighted_final_score``.

The prompt and the output parser are the ``gemascore`` package's (``gemascore.prompt.build_prompt``,
``gemascore.parser.extract_json_from_output``); generation is batched through the judge backends
instead of gemascore's one-pair-per-model-load evaluator, with its decoding settings (greedy, raw
prompt without chat template, repetition penalty 1.2, up to 2048 new tokens). Default judge:
``Gemascore/GEMA-Score-distilled`` subfolder ``GEMA-Score-distilled-Xray-Qwen``.

Per-sample columns: ``gema_score`` (the model's ``weighted_final_score``), the false-prediction
and omission counts ``gema_{entity,location,severity,uncertainty}_{false_prediction,omission}``,
and ``gema_completeness``, ``gema_readability``, ``gema_clinical_utility``. A reply whose JSON
cannot be extracted, or without a numeric ``weighted_final_score``, is NaN everywhere and counted
in ``gema_parse_failures``; its raw reply is kept (judge cache, ``gema_replies`` table). The
backends return only the generated text, so when it lacks gemascore's ``output:`` anchor the
parser is given ``"output: " + reply``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pandas as pd

from boxmed_eval.judges.metric import JudgedMetric
from boxmed_eval.metrics.base import METRICS, MetricResult
from boxmed_eval.records import Prediction, Study

GEMA_DEFAULT_REPO = "Gemascore/GEMA-Score-distilled"
GEMA_DEFAULT_SUBFOLDER = "GEMA-Score-distilled-Xray-Qwen"

# column -> key of the judge's JSON
GEMA_FIELDS: dict[str, str] = {
    "gema_score": "weighted_final_score",
    "gema_entity_false_prediction": "entity_name false_prediction",
    "gema_entity_omission": "entity_name omission",
    "gema_location_false_prediction": "location false_prediction",
    "gema_location_omission": "location omission",
    "gema_severity_false_prediction": "severity false_prediction",
    "gema_severity_omission": "severity omission",
    "gema_uncertainty_false_prediction": "uncertainty false_prediction",
    "gema_uncertainty_omission": "uncertainty omission",
    "gema_completeness": "completeness_score",
    "gema_readability": "readability_score",
    "gema_clinical_utility": "clinical_utility_score",
}


def _number(value: Any) -> float:
    """A JSON number, or a string holding one; a percentage ("47%") is *refused* (NaN): its scale
    is not the 0-1 of weighted_final_score, and guessing (/100) would hide a judge gone off-format."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value.strip().endswith("%"):
            return math.nan
        try:
            return float(value.strip())
        except ValueError:
            return math.nan
    return math.nan


GEMA_SCORE_RANGE = (0.0, 1.0)  # weighted_final_score's scale; a value outside is refused


def build_gema_prompt(reference: str, candidate: str) -> str:
    from gemascore.prompt import build_prompt

    return build_prompt(candidate_report=candidate, reference_report=reference)


def parse_gema_reply(reply: str) -> tuple[dict[str, float], str]:
    """``({column: value}, problem)``: all NaN and a non-empty problem when unparseable."""
    from gemascore.parser import OUTPUT_ANCHOR, GemaScoreParseError, extract_json_from_output

    nan_row = {column: math.nan for column in GEMA_FIELDS}
    text = reply or ""
    if not text.strip():
        return nan_row, "empty judge reply"
    if OUTPUT_ANCHOR not in text:
        text = f"{OUTPUT_ANCHOR} {text}"
    try:
        data = extract_json_from_output(text)
    except GemaScoreParseError as exc:
        return nan_row, str(exc).splitlines()[0].replace("[gemascore] ERROR: ", "")
    if not isinstance(data, dict):
        return nan_row, "the JSON after `output:` is not an object"
    row = {column: _number(data.get(key)) for column, key in GEMA_FIELDS.items()}
    if math.isnan(row["gema_score"]):
        raw = data.get("weighted_final_score")
        if isinstance(raw, str) and raw.strip().endswith("%"):
            return nan_row, f"weighted_final_score is a percentage ({raw!r}), not a 0-1 score"
        return nan_row, "no numeric weighted_final_score in the JSON"
    low, high = GEMA_SCORE_RANGE
    if not low <= row["gema_score"] <= high:
        return nan_row, f"weighted_final_score {row['gema_score']!r} is outside its 0-1 scale"
    return row, ""


@METRICS.register("gema")
class GemaMetric(JudgedMetric):
    description = "GEMA-Score: LLM-judged weighted score, error counts per entity/location/severity/uncertainty"
    needs = (f"the gemascore package and an LLM judge: {GEMA_DEFAULT_REPO}/{GEMA_DEFAULT_SUBFOLDER} in the local "
             "HF cache, or --judge gema=PATH (model folder) or --judge gema=http://HOST:PORT/v1 "
             "(OpenAI-compatible server)")
    provides = tuple(GEMA_FIELDS) + ("gema_parse_failures",)
    default = False  # costs GPU time; requested with --metrics gema or when --judge is given

    default_repo: ClassVar[str] = GEMA_DEFAULT_REPO
    default_subfolder: ClassVar[str] = GEMA_DEFAULT_SUBFOLDER
    default_max_new_tokens: ClassVar[int] = 2048  # gemascore's default
    repetition_penalty: ClassVar[float | None] = 1.2  # gemascore's default
    prompt_format: ClassVar[str] = "raw"  # gemascore feeds the prompt without a chat template
    # so on a server, the completions endpoint: the server's chat template is not applied
    # (judge_api=chat overrides)
    default_judge_api: ClassVar[str] = "completions"

    def available(self) -> tuple[bool, str]:
        import importlib.util

        # find_spec, not import: importing gemascore loads torch and transformers (slow listing)
        try:
            found = importlib.util.find_spec("gemascore") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return False, "needs the gemascore package: pip install 'gemascore>=0.1.1' (or pip install -e '.[judges]')"
        return super().available()

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "gema_judge_api": self.judge_api,
                "gema_score_rule": "weighted_final_score as given; a percentage or a value outside 0-1 is NaN (counted)"}

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        prompts = [build_gema_prompt(references[i], hypotheses[i]) for i in ids]
        replies = self.judge(prompts)
        parsed = [parse_gema_reply(reply) for reply in replies]
        result = MetricResult(conventions={**self.conventions(),
                                           "gema_score": "the judge's weighted_final_score (not recomputed)"})
        for column in GEMA_FIELDS:
            values = {i: row[column] for i, (row, _) in zip(ids, parsed)}
            result.per_sample[column] = values
            finite = [v for v in values.values() if not math.isnan(v)]
            result.corpus[column] = float(sum(finite) / len(finite)) if finite else math.nan
        failures = [(i, problem) for i, (_, problem) in zip(ids, parsed) if problem]
        result.corpus["gema_parse_failures"] = float(len(failures))
        result.tables["gema_replies"] = pd.DataFrame(
            {"id": ids, "gema_score": [row["gema_score"] for row, _ in parsed],
             "parse_problem": [problem for _, problem in parsed], "reply": replies})
        if failures:
            result.messages.append(f"gema: {len(failures)} of {len(ids)} judge replies could not be parsed "
                                   f"(NaN; see gema_replies.csv), e.g. {failures[0][0]}: {failures[0][1]}")
        return result
