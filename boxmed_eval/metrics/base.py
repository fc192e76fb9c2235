"""The metric interface and registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
from tqdm.auto import tqdm

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.records import Prediction, Study
from boxmed_eval.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class MetricResult:
    """What a metric family computes on a corpus.

    ``corpus``: ``{metric name: value}`` (e.g. ``bleu_4``). ``per_sample``: ``{metric name:
    {study id: value}}`` (NaN where a sample has no score). ``tables``: extra tables written to
    the run directory as ``<key>.csv`` (e.g. ``per_class``). ``conventions``: choices recorded
    in summary.json (preprocessing, labeler, averaging). ``messages``: shown to the user.
    """

    corpus: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, dict[str, float]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # family -> why it could not run

    def merge(self, other: "MetricResult") -> None:
        self.skipped.update(other.skipped)
        self.corpus.update(other.corpus)
        self.per_sample.update(other.per_sample)
        self.tables.update(other.tables)
        self.conventions.update(other.conventions)
        self.messages.extend(other.messages)


class Metric(ABC):
    """A metric family (e.g. ``nlg`` gives bleu_1..4, meteor, rouge_l, cider).

    ``description`` and ``needs`` are shown by ``boxmed-eval metrics``; ``provides`` lists the
    metric names it writes; ``available()`` says whether it can run here and, if not, exactly
    what to install or pass.

    The harness always passes the options ``cache_dir`` (the run directory, for metrics that
    cache, e.g. LLM judges) and ``dataset`` (its name); a metric ignores what it does not use.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing"
    provides: ClassVar[tuple[str, ...]] = ()
    default: ClassVar[bool] = True  # part of the default metric set of `run` / `score`
    # True when ``start`` launches work outside the interpreter: such families are computed
    # last, so that the others run while it proceeds.
    background: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self, references: dict[str, str], hypotheses: dict[str, str], *,
              studies: dict[str, Study] | None = None,
              predictions: dict[str, Prediction] | None = None) -> None:
        """Optional: begin work that runs outside the Python interpreter (e.g. METEOR's JVMs),
        so that it overlaps the other metric families. ``compute_metrics`` calls ``start`` on
        every family first, then ``compute`` with the same inputs, then ``close``."""

    def close(self) -> None:
        """Release whatever ``start`` began (called even when another family failed)."""

    @abstractmethod
    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        """Score ``hypotheses`` against ``references`` (same id keys, same order)."""


METRICS: Registry[type[Metric]] = Registry("metric", package="boxmed_eval.metrics",
                                           entry_point_group="boxmed_eval.metrics")


def resolve_metric_names(spec: str | None) -> list[str]:
    """``None``/"default" -> default families; "all" -> every family; else a comma list."""
    if spec is None or spec.strip() in {"", "default"}:
        return [name for name, cls in METRICS.items() if cls.default]
    if spec.strip() == "all":
        return METRICS.names()
    names = [part.strip() for part in spec.split(",") if part.strip()]
    for name in names:
        METRICS.get(name)  # raises with the valid names
    return names


def compute_metrics(names: list[str], references: dict[str, str], hypotheses: dict[str, str], *,
                    studies: dict[str, Study] | None = None, predictions: dict[str, Prediction] | None = None,
                    options: dict[str, dict[str, Any]] | None = None, progress: bool = False) -> MetricResult:
    """Run each metric family; one that cannot run here is skipped with its reason in
    ``messages`` (the others are still computed and written)."""
    if list(references) != list(hypotheses):
        if set(references) != set(hypotheses):
            raise BoxmedError("internal: references and hypotheses must have the same ids")
        hypotheses = {k: hypotheses[k] for k in references}
    result = MetricResult()
    options = options or {}
    metrics: list[tuple[str, Metric]] = []
    try:
        for name in names:
            metric = METRICS.get(name)(**options.get(name, {}))
            ok, reason = metric.available()
            if not ok:
                message = f"metric {name!r} skipped: {reason}"
                log.warning(message)
                result.messages.append(message)
                result.skipped[name] = reason
                continue
            metrics.append((name, metric))
            # background work (JVMs) starts now and overlaps the families computed before it
            metric.start(references, hypotheses, studies=studies, predictions=predictions)
        parts: dict[str, MetricResult] = {}
        ordered = sorted(metrics, key=lambda item: item[1].background)
        for name, metric in tqdm(ordered, desc="score", unit="metric", disable=None if progress else True):
            try:
                parts[name] = metric.compute(references, hypotheses, studies=studies, predictions=predictions)
            except MissingResourceError as exc:
                message = f"metric {name!r} skipped: {exc}"
                log.warning(message)
                result.messages.append(message)
                result.skipped[name] = str(exc)
        for name, _ in metrics:  # merged in the order asked for
            if name in parts:
                result.merge(parts[name])
    finally:
        for _, metric in metrics:
            metric.close()
    return result
