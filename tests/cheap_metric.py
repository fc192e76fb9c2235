"""A cheap metric registered only in tests, so resume tests do not wait for JVMs."""

from boxmed_eval.metrics.base import METRICS, Metric, MetricResult


class TokenOverlap(Metric):
    description = "test only: Jaccard overlap of lower-cased tokens"
    provides = ("token_overlap",)
    default = False

    def compute(self, references, hypotheses, *, studies=None, predictions=None):
        per = {}
        for i, ref in references.items():
            a, b = set(ref.lower().split()), set(hypotheses[i].lower().split())
            per[i] = len(a & b) / len(a | b) if a | b else 0.0
        return MetricResult(corpus={"token_overlap": sum(per.values()) / len(per)}, per_sample={"token_overlap": per})


if "token_overlap" not in METRICS._entries:
    METRICS.register("token_overlap")(TokenOverlap)
