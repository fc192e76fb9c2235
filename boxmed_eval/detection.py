"""Box detection numbers: COCO-style average precision per class, and the area of unions of boxes.

**AP** (:func:`average_precision`) follows pycocotools' ``COCOeval`` for ``iouType="bbox"`` with
one IoU threshold, area range "all" and ``maxDets=100`` (no crowd boxes, nothing ignored):

1. per image and class, detections are sorted by score, highest first (a stable sort, so equal
   scores keep their input order), and only the first ``max_dets`` are kept;
2. each detection in that order is matched to the not yet matched reference box of the same
   image and class with the largest IoU, if that IoU >= the threshold (on equal IoUs the later
   reference box wins, as in COCOeval's loop); otherwise it is a false positive;
3. per class, the detections of all images are ranked by score (stable, images in the order
   given), cumulative TP/FP give recall = TP / n_ref and precision = TP / (TP + FP);
   precision is made non-increasing from the right, and read at the 101 recall points
   0, 0.01, ..., 1 (the first rank whose recall reaches each point; 0 beyond the last);
   AP = the mean of those 101 values;
4. a class with reference boxes but no detection has AP 0; a class with detections but no
   reference box has no AP (NaN) and is left out of the mean; mAP = mean over the classes
   that have an AP.

**Scores.** A box's ``score`` ranks it. Boxes without a score (most report generators give
none) count as score 1.0, so their ranks are their input order (study order, then the order
the model wrote them), exactly what COCOeval does with equal scores; the result then depends
on that order, which is why the conventions record whether scores were given.

**Union area** (:func:`union_iou`): the IoU of two regions, each the union of a set of boxes,
computed exactly on the grid of all box edges (no rasterisation, any image size).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from boxmed_eval.boxes import iou
from boxmed_eval.records import Box

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs
DEFAULT_SCORE = 1.0


@dataclass
class APResult:
    """``per_class``: AP of each class (NaN: detections but no reference box); ``n_reference``
    and ``n_detected``: boxes per class; ``mean``: mAP over the classes with an AP."""

    per_class: dict[str, float] = field(default_factory=dict)
    n_reference: dict[str, int] = field(default_factory=dict)
    n_detected: dict[str, int] = field(default_factory=dict)
    mean: float = float("nan")


def _score(box: Box) -> float:
    return DEFAULT_SCORE if box.score is None else float(box.score)


def average_precision(references: Sequence[tuple[Hashable, str, Box]], detections: Sequence[tuple[Hashable, str, Box]],
                      *, iou_threshold: float = 0.5, max_dets: int = 100,
                      images: Sequence[Hashable] | None = None) -> APResult:
    """COCO-style AP per class at one IoU threshold (see the module docstring).

    ``references`` and ``detections`` are ``(image key, class, box)``; boxes of one image key
    are compared in the same frame (use :func:`boxmed_eval.metrics.grounding.in_reference_frame`
    first when sizes differ). ``images`` fixes the image order used to break score ties
    (default: first appearance in references, then detections)."""
    order: list[Hashable] = list(images) if images is not None else []
    seen = set(order)
    for key, _, _ in [*references, *detections]:
        if key not in seen:
            seen.add(key)
            order.append(key)
    rank_of = {key: i for i, key in enumerate(order)}
    refs: dict[tuple[Hashable, str], list[Box]] = defaultdict(list)
    dets: dict[tuple[Hashable, str], list[Box]] = defaultdict(list)
    for key, cls, box in references:
        refs[(key, cls)].append(box)
    for key, cls, box in detections:
        dets[(key, cls)].append(box)
    classes = sorted({cls for _, cls, _ in references} | {cls for _, cls, _ in detections})
    threshold = min(iou_threshold, 1 - 1e-10)  # COCOeval's guard against a threshold of 1
    result = APResult()
    for cls in classes:
        keys = sorted({k for (k, c) in refs if c == cls} | {k for (k, c) in dets if c == cls}, key=rank_of.__getitem__)
        scores: list[float] = []
        matched: list[bool] = []
        n_ref = 0
        for key in keys:
            gts = refs.get((key, cls), [])
            n_ref += len(gts)
            ranked = sorted(dets.get((key, cls), []), key=lambda b: -_score(b))[:max_dets]  # stable
            taken = [False] * len(gts)
            for det in ranked:
                best, best_iou = -1, threshold
                for g, gt in enumerate(gts):
                    if taken[g]:
                        continue
                    value = iou(gt, det)
                    if value < best_iou:
                        continue
                    best, best_iou = g, value
                if best >= 0:
                    taken[best] = True
                scores.append(_score(det))
                matched.append(best >= 0)
        result.n_reference[cls] = n_ref
        result.n_detected[cls] = len(scores)
        if n_ref == 0:
            result.per_class[cls] = float("nan")
            continue
        if not scores:
            result.per_class[cls] = 0.0
            continue
        ranking = np.argsort(-np.asarray(scores), kind="mergesort")
        tp = np.cumsum(np.asarray(matched, dtype=float)[ranking])
        fp = np.cumsum(1.0 - np.asarray(matched, dtype=float)[ranking])
        recall = tp / n_ref
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing from the right
        where = np.searchsorted(recall, RECALL_POINTS, side="left")
        sampled = np.array([precision[i] if i < len(precision) else 0.0 for i in where])
        result.per_class[cls] = float(sampled.mean())
    values = [v for v in result.per_class.values() if np.isfinite(v)]
    result.mean = float(np.mean(values)) if values else float("nan")
    return result


def union_area(boxes: Sequence[Box]) -> float:
    """Exact area of the union of ``boxes``."""
    return _union_measures(boxes, [])[0]


def union_iou(first: Sequence[Box], second: Sequence[Box]) -> float:
    """IoU of the union of ``first`` with the union of ``second`` (0 when both are empty)."""
    area_a, area_b, inter = _union_measures(first, second)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _union_measures(first: Sequence[Box], second: Sequence[Box]) -> tuple[float, float, float]:
    """(area of the union of ``first``, of ``second``, of their intersection), on the grid of
    all edges: each grid cell lies wholly inside or outside every box."""
    boxes = [*first, *second]
    if not boxes:
        return 0.0, 0.0, 0.0
    xs = np.unique([v for b in boxes for v in (b.x1, b.x2)])
    ys = np.unique([v for b in boxes for v in (b.y1, b.y2)])
    widths, heights = np.diff(xs), np.diff(ys)
    if not len(widths) or not len(heights):
        return 0.0, 0.0, 0.0
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2  # cell centres

    def cover(group: Sequence[Box]) -> np.ndarray:
        mask = np.zeros((len(cy), len(cx)), dtype=bool)
        for b in group:
            mask |= np.outer((cy > b.y1) & (cy < b.y2), (cx > b.x1) & (cx < b.x2))
        return mask

    cells = np.outer(heights, widths)
    in_a, in_b = cover(first), cover(second)
    return float(cells[in_a].sum()), float(cells[in_b].sum()), float(cells[in_a & in_b].sum())
