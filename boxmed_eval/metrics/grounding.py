"""Grounding: how well predicted boxes cover the reference boxes of a study.

Matching rule (option ``grounding.matching``), per study and per image:

* ``hungarian`` (the default): reference and predicted boxes are paired one-to-one so that the
  sum of IoUs is largest (``scipy.optimize.linear_sum_assignment``). A reference box left
  without a partner (fewer predictions than references, or none on that image) scores IoU 0;
  predicted boxes left over are not penalised (this metric measures how well the findings are
  localised, not how many boxes were drawn).
* ``greedy``: one-to-one too, but predicted boxes take partners one after the other, highest
  score first (input order when the boxes have no score), each the free reference box of
  largest IoU (> 0; the first on ties): the matching detection benchmarks (COCO) use, without
  a threshold.
* ``union``: no pairing: the IoU of the union of the predicted boxes with the union of the
  reference boxes (exact areas, :func:`boxmed_eval.detection.union_iou`), the box analogue of
  BioViL's mask IoU on MS-CXR; every reference box of the image gets that value.
* ``best``: each reference box gets the best IoU of any predicted box on the same image (a
  predicted box may serve several references).

Boxes are compared in pixels of the original image. A predicted box that records a different
image size than the reference box (``image_width``/``image_height``) is rescaled to the
reference's size first.

Reported: ``grounding_miou`` (mean IoU over all reference boxes), ``grounding_acc_0.3`` /
``_0.5`` / ``_0.7`` (share of reference boxes with IoU >= threshold), ``grounding_boxes`` (how
many reference boxes were scored); per study ``grounding_miou`` and ``grounding_acc_0.5``.

Detection numbers (:mod:`boxmed_eval.detection`, COCO-style as pycocotools): per class
(``Box.category``, e.g. MS-CXR's category_name) AP at IoU 0.5 in ``grounding_per_class.csv``
and their mean ``grounding_map_0.5``; the "images" are the studies' images, a predicted box
counts for the class its ``category`` names (a box without one: class "(none)", so it matches
no named reference class), ranked by its ``score`` (boxes without one score 1.0: ranked in
input order; ``grounding_ap_scored`` in the conventions says which). AP has no per-study value.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.boxes import iou
from boxmed_eval.detection import average_precision, union_iou
from boxmed_eval.errors import BoxmedError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Box, Prediction, Study

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
MATCHING_RULES = ("hungarian", "greedy", "union", "best")
AP_THRESHOLD = 0.5


def in_reference_frame(pred: Box, ref: Box) -> Box:
    """``pred`` rescaled to ``ref``'s image size when both record one and they differ."""
    if (pred.image_width and pred.image_height and ref.image_width and ref.image_height
            and (pred.image_width, pred.image_height) != (ref.image_width, ref.image_height)):
        sx = ref.image_width / pred.image_width
        sy = ref.image_height / pred.image_height
        return Box(pred.x1 * sx, pred.y1 * sy, pred.x2 * sx, pred.y2 * sy, image_width=ref.image_width,
                   image_height=ref.image_height, image_index=pred.image_index, phrase=pred.phrase,
                   category=pred.category, region=pred.region, score=pred.score)
    return pred


_in_reference_frame = in_reference_frame  # the earlier private name


def iou_matrix(references: list[Box], predictions: list[Box]) -> np.ndarray:
    """IoU of every reference box (rows) with every predicted box (columns)."""
    matrix = np.zeros((len(references), len(predictions)))
    for i, ref in enumerate(references):
        for j, pred in enumerate(predictions):
            matrix[i, j] = iou(ref, in_reference_frame(pred, ref))
    return matrix


def match_boxes(references: list[Box], predictions: list[Box], rule: str = "hungarian") -> list[float]:
    """One IoU per reference box (same order) under the matching rule; boxes pair only with
    boxes on the same image (``image_index``)."""
    if rule not in MATCHING_RULES:
        raise BoxmedError(f"unknown grounding matching rule {rule!r}; choose one of {', '.join(MATCHING_RULES)}")
    result = [0.0] * len(references)
    by_image_ref: dict[int, list[int]] = defaultdict(list)
    by_image_pred: dict[int, list[Box]] = defaultdict(list)
    for i, box in enumerate(references):
        by_image_ref[box.image_index].append(i)
    for box in predictions:
        by_image_pred[box.image_index].append(box)
    for image, ref_indices in by_image_ref.items():
        preds = by_image_pred.get(image, [])
        if not preds:
            continue
        if rule == "union":
            refs = [references[i] for i in ref_indices]
            value = union_iou(refs, [in_reference_frame(p, refs[0]) for p in preds])
            for i in ref_indices:
                result[i] = value
            continue
        matrix = iou_matrix([references[i] for i in ref_indices], preds)
        if rule == "greedy":
            order = sorted(range(len(preds)), key=lambda j: -(1.0 if preds[j].score is None else preds[j].score))
            free = set(range(len(ref_indices)))
            for j in order:
                candidates = [r for r in sorted(free) if matrix[r, j] > 0]
                if not candidates:
                    continue
                row = max(candidates, key=lambda r: matrix[r, j])  # max keeps the first of equal IoUs
                free.discard(row)
                result[ref_indices[row]] = float(matrix[row, j])
        elif rule == "best":
            best = matrix.max(axis=1)
            for row, i in enumerate(ref_indices):
                result[i] = float(best[row])
        else:
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(matrix, maximize=True)
            for row, col in zip(rows, cols):
                result[ref_indices[row]] = float(matrix[row, col])
    return result


@METRICS.register("grounding")
class GroundingMetric(Metric):
    description = ("box grounding: mean IoU and accuracy at IoU 0.3/0.5/0.7 of predicted boxes against the "
                   "studies' reference boxes (Hungarian matching per image; option matching=greedy|union|best), "
                   "and COCO-style AP@0.5 per box category with its mean")
    needs = "studies with reference boxes (e.g. ms_cxr) and predictions with boxes; scipy"
    provides = ("grounding_miou", "grounding_acc_0.3", "grounding_acc_0.5", "grounding_acc_0.7", "grounding_boxes",
                "grounding_map_0.5")
    default = True  # computes nothing (with a message) unless predictions carry boxes

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.matching = str(options.get("matching", "hungarian"))
        if self.matching not in MATCHING_RULES:
            raise BoxmedError(f"unknown grounding matching rule {self.matching!r}; "
                              f"choose one of {', '.join(MATCHING_RULES)}")

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        result = MetricResult(conventions={"grounding_matching": self.matching,
                                           "grounding_coordinates": "pixels of the original image"})
        studies = studies or {}
        predictions = predictions or {}
        ids = [i for i in references if i in studies and studies[i].boxes]
        if not any(p.boxes for p in predictions.values()):
            result.messages.append("grounding skipped: the predictions carry no boxes")
            return result
        if not ids:
            result.messages.append("grounding skipped: no study has reference boxes")
            return result
        all_ious: list[float] = []
        per_miou: dict[str, float] = {}
        per_acc: dict[str, float] = {}
        for study_id in references:
            if study_id not in ids:
                per_miou[study_id] = float("nan")
                per_acc[study_id] = float("nan")
                continue
            pred = predictions.get(study_id)
            ious = match_boxes(studies[study_id].boxes, pred.boxes if pred else [], self.matching)
            all_ious.extend(ious)
            per_miou[study_id] = float(np.mean(ious))
            per_acc[study_id] = float(np.mean([v >= 0.5 for v in ious]))
        values = np.asarray(all_ious)
        result.corpus["grounding_miou"] = float(values.mean())
        for threshold in THRESHOLDS:
            result.corpus[f"grounding_acc_{threshold}"] = float((values >= threshold).mean())
        result.corpus["grounding_boxes"] = float(len(values))
        result.per_sample["grounding_miou"] = per_miou
        result.per_sample["grounding_acc_0.5"] = per_acc
        self._detection(result, ids, studies, predictions)
        return result

    @staticmethod
    def _detection(result: MetricResult, ids: list[str], studies: dict[str, Study],
                   predictions: dict[str, Prediction]) -> None:
        """Per-class AP@0.5 (COCO-style) over the studies' images; classes = ``Box.category``."""
        refs: list[tuple[tuple[str, int], str, Box]] = []
        dets: list[tuple[tuple[str, int], str, Box]] = []
        for study_id in ids:
            frame: dict[int, Box] = {}
            for box in studies[study_id].boxes:
                frame.setdefault(box.image_index, box)
                refs.append(((study_id, box.image_index), box.category or "(none)", box))
            pred = predictions.get(study_id)
            for box in pred.boxes if pred else []:
                ref = frame.get(box.image_index)
                dets.append(((study_id, box.image_index), box.category or "(none)",
                             in_reference_frame(box, ref) if ref is not None else box))
        ap = average_precision(refs, dets, iou_threshold=AP_THRESHOLD)
        result.corpus["grounding_map_0.5"] = ap.mean
        result.tables["grounding_per_class"] = pd.DataFrame(
            [{"category": c, "ap_0.5": ap.per_class[c], "n_reference": ap.n_reference[c],
              "n_predicted": ap.n_detected[c]} for c in ap.per_class])
        scored = [b.score is not None for _, _, b in dets]
        result.conventions["grounding_ap_scored"] = ("all boxes scored" if scored and all(scored) else
                                                     "no box scores: ranked in input order" if not any(scored) else
                                                     "some boxes scored (the others count as 1.0)")
