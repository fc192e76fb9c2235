"""Metrics: one module per metric family, each a ``Metric`` subclass registered with
``@METRICS.register("family")``. Every metric returns corpus scores and per-sample scores
keyed by study id, so runs can be paired for significance tests."""

from boxmed_eval.metrics.base import METRICS, Metric, MetricResult, compute_metrics, resolve_metric_names

__all__ = ["METRICS", "Metric", "MetricResult", "compute_metrics", "resolve_metric_names"]
