"""RadCliQ (Yu et al., Patterns 2023): a linear composite of four per-report metrics fitted to
radiologists' error counts; lower is better. Equal to rajpurkarlab/CXR-Report-Metric
(``CXRMetric/run_eval.py``), whose published models are reproduced here as constants:

- **RadCliQ-v0**: ``normalizer.pkl`` (sklearn ``StandardScaler``, fitted on 200 reports) then
  ``composite_metric_model.pkl`` (sklearn ``LinearRegression``): ``((x - mean) / scale) @ coef + intercept``.
- **RadCliQ-v1**: ``radcliq-v1.pkl`` (``CompositeMetric``: its own ``StandardScaler`` fitted on
  160 reports and 5 coefficients, the last one multiplying a column of ones).
- ``radcliq_v1_inverse``: ReXrank's leaderboard column "1/RadCliQ-v1" (higher is better), read
  here as 1 / (mean RadCliQ-v1 over the corpus): a corpus figure with no per-sample value.

The component order of both models is CXR-Report-Metric's ``COLS``: ``radgraph_combined``,
``bertscore`` (distilroberta-base F1, layer 5, baseline-rescaled, no idf), ``semb_score``
(cosine of CheXbert [CLS] embeddings) and ``bleu_score`` (BLEU-2, below). The constants were
read from the three pickles (values printed with ``float.hex`` and checked bit for bit):
``tests/test_metric_radcliq.py`` recomputes the 590 RadCliQ-v0/v1 values of a real
CXR-Report-Metric output from its own component columns.

Running the family needs the components' models: ``bertscore`` (variant ``cxr``),
``sembscore`` (CheXbert) and ``radgraph``. Options are passed on to them with a prefix:
``radcliq.bertscore_model=PATH``, ``radcliq.chexbert_checkpoint=PATH``,
``radcliq.chexbert_bert=DIR``, ``radcliq.radgraph_*``. When one is missing the family is
reported unavailable with that component's own message. :func:`radcliq_from_components`
computes the composite from given component scores (e.g. a CXR-Report-Metric output).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

# CXR-Report-Metric's COLS: the order of the models' inputs.
COMPONENTS: tuple[str, ...] = ("radgraph_combined", "bertscore", "semb_score", "bleu_score")


@dataclass(frozen=True)
class LinearComposite:
    """``((x - mean) / scale) @ coef + intercept`` (StandardScaler then a linear model)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    source: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(COMPONENTS):
            raise ValueError(f"RadCliQ needs an (n, 4) array of {COMPONENTS}, got shape {x.shape}")
        # same operation order as sklearn (subtract, divide, matrix product, add)
        normalised = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return normalised @ np.asarray(self.coef) + self.intercept


RADCLIQ_V0 = LinearComposite(
    mean=(0.5398376019082272, 0.6312549595000001, 0.7716797866672277, 0.4607372064809605),
    scale=(0.3018344440559102, 0.22466950746141123, 0.24750333805236252, 0.30336670936092264),
    coef=(-0.4796252644863446, -0.6762170542369337, -0.46366575161751994, 0.2165861905287535),
    intercept=1.641666666666666,
    source="CXR-Report-Metric CXRMetric/normalizer.pkl + CXRMetric/composite_metric_model.pkl",
)


@dataclass(frozen=True)
class AugmentedComposite(LinearComposite):
    """RadCliQ-v1's ``CompositeMetric``: the normalised inputs get a column of ones and are
    multiplied by 5 coefficients (``intercept`` is the fifth). Kept as its own product so the
    floating-point result equals CXR-Report-Metric's."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(COMPONENTS):
            raise ValueError(f"RadCliQ needs an (n, 4) array of {COMPONENTS}, got shape {x.shape}")
        normalised = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        augmented = np.concatenate((normalised, np.ones((normalised.shape[0], 1))), axis=1)
        return augmented @ np.asarray((*self.coef, self.intercept))


RADCLIQ_V1 = AugmentedComposite(
    mean=(0.5379231241355762, 0.6175725628125001, 0.7647942121140658, 0.44738335396242174),
    scale=(0.3028258411486429, 0.22430938459304575, 0.2539439110169773, 0.2989271671041838),
    coef=(-0.37708368261038905, -0.37030009974480316, -0.25261621789593225, 4.315048405024756e-12),
    intercept=2.466552561323256e-10,
    source="CXR-Report-Metric CXRMetric/radcliq-v1.pkl",
)


def radcliq_from_components(radgraph_combined: Any, bertscore: Any, semb_score: Any,
                            bleu_score: Any) -> dict[str, np.ndarray]:
    """RadCliQ-v0 and -v1 per report from the four component arrays (CXR-Report-Metric's
    columns). CXR-Report-Metric keeps BERTScore as float32: pass it as it computed it."""
    x = np.column_stack([np.asarray(c, dtype=np.float64) for c in (radgraph_combined, bertscore, semb_score,
                                                                      bleu_score)])
    return {"radcliq_v0": RADCLIQ_V0.predict(x), "radcliq_v1": RADCLIQ_V1.predict(x)}


# ---------------------------------------------------------------------------- BLEU-2 component

def cxr_tokens(report: str) -> list[str]:
    """CXR-Report-Metric's ``prep_reports``: lowercase, a space before each '.', split on single
    spaces, empty strings dropped (commas stay attached to words)."""
    return [t for t in str(report).lower().replace(".", " .").split(" ") if t != ""]


def cxr_bleu2(reference: str, hypothesis: str) -> float:
    """The ``bleu_score`` column: fast-bleu's ``BLEU([ref], {"bigram": (1/2, 1/2)})`` on one
    hypothesis, i.e. NLTK sentence BLEU-2 with smoothing method 1 (a zero bigram precision
    becomes 0.1 / count), 0 when no unigram matches, brevity penalty against the reference."""
    ref, hyp = cxr_tokens(reference), cxr_tokens(hypothesis)
    log_sum = 0.0
    for n in (1, 2):
        hyp_grams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        ref_grams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        matches: float = sum(min(count, ref_grams[g]) for g, count in hyp_grams.items())
        total = max(1, sum(hyp_grams.values()))
        if matches == 0:
            if n == 1:
                return 0.0
            matches = 0.1  # fast-bleu smooth_1: epsilon 1/10
        log_sum += 0.5 * math.log(matches / total)
    if not hyp:
        return 0.0
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(log_sum)


# ---------------------------------------------------------------------------- the family

_HARNESS_OPTIONS = ("cache_dir", "dataset")


@METRICS.register("radcliq")
class RadCliQMetric(Metric):
    description = ("RadCliQ-v0 / RadCliQ-v1 (lower is better) and ReXrank's 1/RadCliQ-v1, from RadGraph, "
                   "BERTScore, SembScore and BLEU-2 with CXR-Report-Metric's published coefficients")
    needs = ("the component models: bertscore (distilroberta-base: radcliq.bertscore_model=PATH), CheXbert "
             "(radcliq.chexbert_checkpoint=PATH) and RadGraph (see the radgraph family)")
    provides = ("radcliq_v0", "radcliq_v1", "radcliq_v1_inverse", "radcliq_bleu_2")
    default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        shared = {k: v for k, v in options.items() if k in _HARNESS_OPTIONS}
        self._component_options = {
            "bertscore": {**shared, "variant": "cxr", **_prefixed(options, "bertscore_")},
            "sembscore": {**shared, **_prefixed(options, "chexbert_")},
            "radgraph": {**shared, "variant": "combined", **_prefixed(options, "radgraph_")},
        }
        self._components: dict[str, Metric] | None = None

    def _build(self) -> dict[str, Metric]:
        if self._components is None:
            self._components = {name: METRICS.get(name)(**opts) for name, opts in self._component_options.items()}
        return self._components

    def available(self) -> tuple[bool, str]:
        reasons = []
        for name, metric in self._build().items():
            ok, reason = metric.available()
            if not ok:
                reasons.append(f"component {name}: {reason}")
        if reasons:
            reasons.append("inside radcliq pass them as radcliq.bertscore_model=PATH, radcliq.chexbert_checkpoint=PATH "
                           "(radcliq.chexbert_bert=DIR) and radcliq.radgraph_model=PATH (radcliq.radgraph_bert=DIR)")
        return (not reasons), "; ".join(reasons)

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        components = self._build()
        parts = {name: metric.compute(references, hypotheses, studies=studies, predictions=predictions)
                 for name, metric in components.items()}
        bert = parts["bertscore"].per_sample[getattr(components["bertscore"], "metric_name", "bertscore_cxr")]
        semb = parts["sembscore"].per_sample["sembscore"]
        radgraph = parts["radgraph"].per_sample["radgraph_combined"]
        bleu = [cxr_bleu2(references[i], hypotheses[i]) for i in ids]
        scores = radcliq_from_components([radgraph[i] for i in ids], [bert[i] for i in ids],
                                         [semb[i] for i in ids], bleu)
        result = MetricResult()
        for name, values in scores.items():
            result.per_sample[name] = dict(zip(ids, map(float, values)))
            result.corpus[name] = float(np.mean(values)) if len(values) else float("nan")
        result.per_sample["radcliq_bleu_2"] = dict(zip(ids, bleu))
        result.corpus["radcliq_bleu_2"] = float(np.mean(bleu)) if bleu else float("nan")
        v1 = result.corpus["radcliq_v1"]
        result.corpus["radcliq_v1_inverse"] = 1.0 / v1 if v1 else float("nan")
        for part in parts.values():
            result.conventions.update(part.conventions)
            result.messages.extend(part.messages)
        result.conventions["radcliq"] = (f"v0: {RADCLIQ_V0.source}; v1: {RADCLIQ_V1.source}; inputs "
                                         f"{', '.join(COMPONENTS)}; radcliq_v1_inverse = 1 / mean radcliq_v1 "
                                         "(ReXrank's 1/RadCliQ-v1); radcliq_bleu_2 = fast-bleu BLEU-2 on "
                                         "CXR-Report-Metric's tokens")
        return result

    def close(self) -> None:
        for metric in (self._components or {}).values():
            metric.close()


def _prefixed(options: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)}


__all__ = ["COMPONENTS", "RADCLIQ_V0", "RADCLIQ_V1", "LinearComposite", "RadCliQMetric", "cxr_bleu2",
           "cxr_tokens", "radcliq_from_components"]
