"""LLM judges for GREEN, GEMA-Score and RadFact's entailment (``radfact`` with ``entailment=llm``): a local transformers backend (``hf``) and an
OpenAI-compatible HTTP backend (``openai``), a per-run reply cache and the PHI guard.

``judge_options_from_cli`` turns the ``--judge`` / ``--judge-model`` / ``--allow-remote-phi``
command-line values into per-metric option dicts for ``Metric(**options)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from boxmed_eval.errors import BoxmedError
from boxmed_eval.judges.base import GenerationSettings, JudgeBackend, JudgeError, JudgeSpec, parse_judge_spec

JUDGED_METRICS = ("green", "gema")
# Judged only when named (--judge radfact=URL): a shared --judge URL stays GREEN's and
# GEMA-Score's, so that asking for those never starts RadFact's many entailment calls.
NAMED_ONLY_JUDGED = ("radfact",)

_PER_METRIC = re.compile(r"^\s*(green|gema|radfact)\s*=(.*)$", re.IGNORECASE)


def _split(values: str | Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["green=URL", "PATH"]`` -> ``{"green": "URL", "*": "PATH"}`` (``*``: every metric)."""
    if values is None:
        return {}
    if isinstance(values, str):
        values = [values]
    result: dict[str, str] = {}
    for value in values:
        if value is None or not str(value).strip():
            continue
        match = _PER_METRIC.match(str(value))
        metric, target = (match.group(1).lower(), match.group(2).strip()) if match else ("*", str(value).strip())
        if not target:
            raise BoxmedError(f"{flag} {value!r}: nothing after '='; use {flag} {metric}=PATH_OR_URL")
        if metric in result:
            which = "more than one value for every metric" if metric == "*" else f"{metric} given twice"
            raise BoxmedError(f"{flag}: {which} ({result[metric]!r} and {target!r}); use {flag} green=... "
                              f"{flag} gema=... for different judges")
        result[metric] = target
    return result


def judge_options_from_cli(judge: str | Sequence[str] | None = None, judge_model: str | Sequence[str] | None = None,
                           *, allow_remote_phi: bool = False, trust_remote_code: bool = False,
                           dataset: str | None = None, cache_dir: str | None = None,
                           batch_size: int | None = None, device: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-metric options for GREEN and GEMA-Score.

    ``judge`` / ``judge_model`` take one value for both metrics (``http://127.0.0.1:8000/v1``)
    or per-metric values (``green=URL``, ``gema=PATH``); a per-metric value overrides the
    shared one. Returns ``{"green": {...}, "gema": {...}}`` with only the options that were
    given (a metric without ``judge`` uses its default judge from the local HF cache).
    ``radfact`` gets options only when named (``radfact=URL``); a shared ``--judge`` is not its.
    ``configured_judge_metrics`` tells which metrics got an explicit judge.
    """
    judges = _split(judge, "--judge")
    models = _split(judge_model, "--judge-model")
    options: dict[str, dict[str, Any]] = {}
    for metric in JUDGED_METRICS + NAMED_ONLY_JUDGED:
        entry: dict[str, Any] = {}
        named_only = metric in NAMED_ONLY_JUDGED
        if named_only and metric not in judges:
            continue
        chosen_judge = judges.get(metric) if named_only else judges.get(metric, judges.get("*"))
        chosen_model = models.get(metric, models.get("*"))
        if chosen_judge:
            entry["judge"] = chosen_judge
        if chosen_model:
            entry["judge_model"] = chosen_model
        if allow_remote_phi:
            entry["allow_remote_phi"] = True
        if trust_remote_code:
            entry["trust_remote_code"] = True
        for key, value in (("dataset", dataset), ("cache_dir", cache_dir), ("batch_size", batch_size),
                           ("device", device)):
            if value is not None:
                entry[key] = value
        if entry:
            options[metric] = entry
    return options


def configured_judge_metrics(options: dict[str, dict[str, Any]]) -> list[str]:
    """The judged metrics given an explicit ``--judge`` (to add to the default metric set)."""
    return [name for name in JUDGED_METRICS + NAMED_ONLY_JUDGED if options.get(name, {}).get("judge")]


__all__ = ["JUDGED_METRICS", "GenerationSettings", "JudgeBackend", "JudgeError", "JudgeSpec",
           "configured_judge_metrics", "judge_options_from_cli", "parse_judge_spec"]
