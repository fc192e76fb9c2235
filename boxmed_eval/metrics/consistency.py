"""Laterality and anatomy consistency of predicted boxes with the sentences they ground.

Each predicted box is checked against its own sentence (``Box.phrase``); the sentence's
chain (:func:`boxmed_model.cot.sentence_chains`: the chain of the box's ``category`` when it
has one, else its first present finding, else its first chain) names the region(s) and side.

- **Laterality error**: the sentence says left (or right) and the box's centre lies on the
  other half of the image. Chest films are displayed with the patient's left on the image's
  RIGHT (PA and AP alike), so a left-sided finding belongs at x > width / 2 of the image as
  stored. Bilateral and unsided sentences are not checked.
- **Anatomy error**: no more than ``threshold`` (half) of the box's area lies inside the
  template of any region the chain names. Templates (:data:`REGION_TEMPLATES`) are generous
  rectangles of a standard frontal film in 0..1 image coordinates, drawn so that a box in the
  named region always passes; they catch boxes that are plainly elsewhere (a "right apical"
  box at the left base, a "cardiac silhouette" box over the lung apex), not small offsets.

Option ``boxes=reference`` checks the studies' own boxes instead (an audit of a dataset's
box labels, e.g. MS-CXR's), under the same names.

Reported per study (NaN when the prediction has no box with a phrase): ``laterality_errors``
and ``anatomy_errors`` (counts); corpus: their means per grounded report, the rates
``laterality_error_rate`` (errors / sided boxes) and ``anatomy_error_rate`` (errors / boxes
checked) and the numbers of boxes checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from boxmed_eval.errors import BoxmedError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.metrics.entailment import side_of
from boxmed_eval.records import Box, Prediction, Study

# (x1, y1, x2, y2) in 0..1 of the image as displayed; x = 0 is the image's left, the PATIENT'S RIGHT.
REGION_TEMPLATES: dict[str, tuple[float, float, float, float]] = {
    "right lung": (0.0, 0.0, 0.55, 0.95),
    "left lung": (0.45, 0.0, 1.0, 0.95),
    "right apical zone": (0.0, 0.0, 0.55, 0.5),
    "left apical zone": (0.45, 0.0, 1.0, 0.5),
    "right hilar structures": (0.15, 0.2, 0.55, 0.75),
    "left hilar structures": (0.45, 0.2, 0.85, 0.75),
    "whole lung": (0.0, 0.0, 1.0, 0.95),
    "cardiac silhouette": (0.2, 0.3, 0.9, 0.95),
    "mediastinum": (0.2, 0.0, 0.8, 0.85),
    "trachea": (0.3, 0.0, 0.7, 0.55),
    "spine": (0.3, 0.0, 0.7, 1.0),
    "abdomen": (0.0, 0.55, 1.0, 1.0),
}
ANATOMY_THRESHOLD = 0.5


@dataclass(frozen=True)
class BoxCheck:
    """The verdict on one predicted box."""

    box: Box
    regions: tuple[str, ...]
    side: str | None
    laterality_error: bool | None  # None: not checked (bilateral or unsided sentence)
    anatomy_error: bool
    coverage: float  # the largest share of the box inside a named region's template


def _normalised(box: Box, size: tuple[int, int] | None) -> tuple[float, float, float, float] | None:
    width = box.image_width or (size[0] if size else None)
    height = box.image_height or (size[1] if size else None)
    if not width or not height:
        return None
    return box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height


def template_coverage(corners: tuple[float, float, float, float], region: str) -> float:
    """Share of the box's area inside the region's template (a zero-area box: whether its
    point lies inside)."""
    tx1, ty1, tx2, ty2 = REGION_TEMPLATES[region]
    x1, y1, x2, y2 = corners
    area = (x2 - x1) * (y2 - y1)
    if area <= 0:
        return float(tx1 <= (x1 + x2) / 2 <= tx2 and ty1 <= (y1 + y2) / 2 <= ty2)
    inter = max(0.0, min(x2, tx2) - max(x1, tx1)) * max(0.0, min(y2, ty2) - max(y1, ty1))
    return inter / area


def sentence_regions(sentence: str, category: str = "") -> tuple[tuple[str, ...], str | None]:
    """The regions and side the chain of ``sentence`` (for ``category``) names."""
    from boxmed_model.cot import sentence_chains

    chains = sentence_chains(sentence)
    chosen = next((c for c in chains if category and any(d.split(" (")[0] == category for d in c.diseases)), None)
    if chosen is None:
        chosen = next((c for c in chains if not all(d.endswith("(absent)") for d in c.diseases)), chains[0])
    regions = tuple(r for r in chosen.regions if r in REGION_TEMPLATES) or ("whole lung",)
    return regions, side_of(regions, chosen.finding)


def check_box(box: Box, size: tuple[int, int] | None = None, *,
              threshold: float = ANATOMY_THRESHOLD) -> BoxCheck | None:
    """Check one box against its phrase; None when it has no phrase or no image size."""
    corners = _normalised(box, size)
    if corners is None or not box.phrase.strip():
        return None
    regions, side = sentence_regions(box.phrase, box.category)
    centre = (corners[0] + corners[2]) / 2
    laterality: bool | None = None
    if side == "left":
        laterality = centre < 0.5  # the patient's left is the image's right half
    elif side == "right":
        laterality = centre > 0.5
    coverage = max(template_coverage(corners, r) for r in regions)
    return BoxCheck(box, regions, side, laterality, coverage <= threshold, coverage)


def check_boxes(boxes: Sequence[Box], size: tuple[int, int] | None = None, *,
                threshold: float = ANATOMY_THRESHOLD) -> list[BoxCheck]:
    return [c for c in (check_box(b, size, threshold=threshold) for b in boxes) if c is not None]


@METRICS.register("box_consistency")
class BoxConsistencyMetric(Metric):
    description = ("laterality and anatomy errors of predicted boxes: a left/right sentence with its box on the "
                   "other side of the film (patient's left = image right), a box outside the region its chain names")
    needs = "predictions with boxes whose phrase is their sentence (e.g. boxmedrl mode=grounded)"
    provides = ("laterality_errors", "anatomy_errors", "laterality_error_rate", "anatomy_error_rate",
                "laterality_checked_boxes", "anatomy_checked_boxes")
    default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.boxes = str(options.get("boxes") or "prediction")
        if self.boxes not in ("prediction", "reference"):
            raise BoxmedError(f"--metric-option box_consistency.boxes={self.boxes!r}: choose prediction or reference")
        value = options.get("threshold", ANATOMY_THRESHOLD)
        try:
            self.threshold = float(value)
        except (TypeError, ValueError):
            raise BoxmedError(f"--metric-option box_consistency.threshold={value!r}: expected a number") from None
        if not 0.0 <= self.threshold < 1.0:
            raise BoxmedError(f"--metric-option box_consistency.threshold={value!r}: expected 0 <= threshold < 1")

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        from boxmed_eval.metrics.radfact import study_image_size

        studies = studies or {}
        predictions = predictions or {}
        result = MetricResult(conventions={"box_consistency_display": "patient's left on the image's right",
                                           "box_consistency_threshold": self.threshold,
                                           "box_consistency_boxes": self.boxes})
        lat: dict[str, float] = {}
        ana: dict[str, float] = {}
        sided = sided_errors = checked = anatomy_errors = 0
        for study_id in references:
            study = studies.get(study_id)
            if self.boxes == "reference":
                boxes = study.boxes if study else []
            else:
                prediction = predictions.get(study_id)
                boxes = prediction.boxes if prediction else []
            checks = check_boxes(boxes, study_image_size(study), threshold=self.threshold)
            if not checks:
                lat[study_id] = ana[study_id] = math.nan
                continue
            lat_errors = sum(bool(c.laterality_error) for c in checks)
            ana_errors = sum(c.anatomy_error for c in checks)
            lat[study_id], ana[study_id] = float(lat_errors), float(ana_errors)
            sided += sum(c.laterality_error is not None for c in checks)
            sided_errors += lat_errors
            checked += len(checks)
            anatomy_errors += ana_errors
        grounded = [i for i in lat if not math.isnan(lat[i])]
        if not grounded:
            result.messages.append(f"box_consistency skipped: no {self.boxes} box has a phrase and an image size")
            return result
        result.per_sample = {"laterality_errors": lat, "anatomy_errors": ana}
        result.corpus = {
            "laterality_errors": sum(lat[i] for i in grounded) / len(grounded),
            "anatomy_errors": sum(ana[i] for i in grounded) / len(grounded),
            "laterality_error_rate": sided_errors / sided if sided else math.nan,
            "anatomy_error_rate": anatomy_errors / checked,
            "laterality_checked_boxes": float(sided),
            "anatomy_checked_boxes": float(checked),
        }
        return result
