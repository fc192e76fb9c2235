"""RaTEScore (Zhao et al., EMNLP 2024): entity-aware similarity of radiology reports, from a
medical NER model and an entity-embedding model with learned type weights.

Not runnable in boxmed-eval yet, and said so rather than approximated: the ``RaTEScore``
package (0.6.0) installs with ``--no-deps`` but does not import on this project's stack, because
it imports ``medspacy`` (spaCy and its compiled dependencies) at module level for sentence
splitting; it also needs its two models (``Angelakeke/RaTE-NER-Deberta`` and
``Angelakeke/RaTE-Embedding``) and its type-weight matrix. A replacement needs the NER
post-processing, the entity matching and the weights re-implemented and checked against the
package on a machine where it runs; until then the family is registered as unavailable so that
``boxmed-eval metrics`` lists it with this reason and a run asking for it writes every other metric.
"""

from __future__ import annotations

from typing import Any

from boxmed_eval.errors import MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

REASON = ("RaTEScore is not implemented here: the RaTEScore package needs medspacy/spaCy (it does not import on "
          "this stack: 'No module named medspacy') and the RaTE-NER-Deberta / RaTE-Embedding models; "
          "no numbers are produced rather than approximate ones")


@METRICS.register("ratescore")
class RaTEScoreMetric(Metric):
    description = "RaTEScore (entity-aware report similarity) — registered, not runnable yet (see needs)"
    needs = "not available: " + REASON
    provides = ("ratescore",)
    default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def available(self) -> tuple[bool, str]:
        return False, REASON

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        raise MissingResourceError(REASON)


__all__ = ["RaTEScoreMetric"]
