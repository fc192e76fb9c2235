"""COCO-style AP worked out by hand and checked against pycocotools' COCOeval; greedy and union
matching of the grounding metric on hand-made boxes."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from boxmed_eval.detection import average_precision, union_area, union_iou
from boxmed_eval.metrics.base import compute_metrics
from boxmed_eval.metrics.grounding import match_boxes
from boxmed_eval.records import Box, Prediction, Study


def B(x1: float, y1: float, x2: float, y2: float, score: float | None = None, category: str = "") -> Box:
    return Box(float(x1), float(y1), float(x2), float(y2), score=score, category=category)


# class A: img1 has g1, detections d1 (TP, 0.9) and d2 (FP, 0.8); img2 has g2, g3, d3 (IoU 0.9 with g2,
# 0.7) and d4 (IoU exactly 0.5 with g3, 0.6: a TP at threshold 0.5). Class B: a reference, no
# detection (AP 0). Class C: a detection, no reference (no AP).
HAND_REFS = [(1, "A", B(0, 0, 10, 10)), (2, "A", B(0, 0, 10, 10)), (2, "A", B(50, 50, 60, 60)),
             (1, "B", B(100, 100, 120, 120))]
HAND_DETS = [(1, "A", B(0, 0, 10, 10, 0.9)), (1, "A", B(20, 20, 30, 30, 0.8)), (2, "A", B(0, 0, 10, 9, 0.7)),
             (2, "A", B(50, 50, 60, 55, 0.6)), (1, "C", B(0, 0, 5, 5, 0.5))]


def test_ap_worked_out_by_hand() -> None:
    result = average_precision(HAND_REFS, HAND_DETS)
    # ranks TP FP TP TP of 3 references: recall 1/3 1/3 2/3 1, precision 1 1/2 2/3 3/4, made
    # non-increasing from the right: 1 .75 .75 .75. Recall points 0..0.33 (34 of them) read 1, the
    # other 67 read 0.75: AP = (34 + 67 * 0.75) / 101
    assert result.per_class["A"] == pytest.approx((34 + 67 * 0.75) / 101)
    assert result.per_class["B"] == 0.0
    assert math.isnan(result.per_class["C"])
    assert result.mean == pytest.approx(((34 + 67 * 0.75) / 101 + 0.0) / 2)
    assert result.n_reference == {"A": 3, "B": 1, "C": 0} and result.n_detected == {"A": 4, "B": 0, "C": 1}
    # at IoU 0.75 d4 (IoU 0.5) is a false positive: TP FP TP FP -> precision 1 .5 .67 .5, recall
    # 1/3 1/3 2/3 2/3: points up to 0.33 read 1, up to 0.66 read 2/3, the remaining 34 read 0
    strict = average_precision(HAND_REFS, HAND_DETS, iou_threshold=0.75)
    assert strict.per_class["A"] == pytest.approx((34 + 33 * 2 / 3) / 101)


def test_ap_without_scores_ranks_in_input_order() -> None:
    refs = [(1, "A", B(0, 0, 10, 10)), (2, "A", B(0, 0, 10, 10))]
    fp_first = [(1, "A", B(50, 50, 60, 60)), (1, "A", B(0, 0, 10, 10)), (2, "A", B(0, 0, 10, 10))]
    # FP TP TP: precision 0 .5 .67 -> .67 .67 .67 at recall 0 .5 1: AP 2/3
    assert average_precision(refs, fp_first).per_class["A"] == pytest.approx(2 / 3)
    # the FP written last on the last image: TP TP FP -> AP 1 (ranks follow images, then boxes)
    fp_last = [(1, "A", B(0, 0, 10, 10)), (2, "A", B(0, 0, 10, 10)), (2, "A", B(50, 50, 60, 60))]
    assert average_precision(refs, fp_last).per_class["A"] == pytest.approx(1.0)
    # the FP last on the first image: still TP FP TP, since image 1 comes first
    fp_mid = [(1, "A", B(0, 0, 10, 10)), (1, "A", B(50, 50, 60, 60)), (2, "A", B(0, 0, 10, 10))]
    assert average_precision(refs, fp_mid).per_class["A"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def _cocoeval_ap(refs: list, dets: list, threshold: float = 0.5) -> dict[str, float]:
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    classes = sorted({c for _, c, _ in refs} | {c for _, c, _ in dets})
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    images = sorted({k for k, _, _ in refs} | {k for k, _, _ in dets})
    gt = coco.COCO()
    gt.dataset = {"images": [{"id": k} for k in images], "categories": [{"id": i} for i in cat_id.values()],
                  "annotations": [{"id": n + 1, "image_id": k, "category_id": cat_id[c], "iscrowd": 0,
                                   "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], "area": b.area}
                                  for n, (k, c, b) in enumerate(refs)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": k, "category_id": cat_id[c], "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
                          "score": b.score} for k, c, b in dets])
        evaluator = cocoeval.COCOeval(gt, dt, "bbox")
        evaluator.params.iouThrs = np.array([threshold])
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; area "all", maxDets 100
    out = {}
    for c, k in cat_id.items():
        values = precision[0, :, evaluator.params.catIds.index(k), 0, -1]
        out[c] = float(values.mean()) if (values > -1).all() else float("nan")
    return out


def test_ap_equals_pycocotools_cocoeval() -> None:
    theirs = _cocoeval_ap(HAND_REFS, HAND_DETS)
    ours = average_precision(HAND_REFS, HAND_DETS).per_class
    assert set(theirs) == set(ours)
    for c in ours:
        assert (math.isnan(ours[c]) and math.isnan(theirs[c])) or ours[c] == pytest.approx(theirs[c], abs=1e-12)
    # a seeded case with many boxes, ties of IoU and of score, at two thresholds
    rng = np.random.default_rng(3)
    refs, dets = [], []
    for image in range(1, 9):
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.integers(0, 80, 2)
            w, h = rng.integers(5, 30, 2)
            cls = str(rng.choice(["A", "B", "C"]))
            refs.append((image, cls, B(x, y, x + w, y + h)))
            for _ in range(int(rng.integers(0, 3))):  # jittered detections of it
                jx, jy = rng.integers(-6, 7, 2)
                dets.append((image, cls, B(x + jx, y + jy, x + jx + w, y + jy + h, float(rng.integers(1, 6)) / 5)))
        for _ in range(int(rng.integers(0, 3))):  # stray detections
            x, y = rng.integers(0, 90, 2)
            dets.append((image, str(rng.choice(["A", "B", "C"])), B(x, y, x + 10, y + 10, float(rng.integers(1, 6)) / 5)))
    for threshold in (0.5, 0.3):
        theirs = _cocoeval_ap(refs, dets, threshold)
        ours = average_precision(refs, dets, iou_threshold=threshold, images=sorted({k for k, _, _ in refs + dets}))
        assert ours.per_class == pytest.approx(theirs, abs=1e-12, nan_ok=True)


def test_union_area_and_union_iou() -> None:
    assert union_area([B(0, 0, 10, 10), B(5, 5, 15, 15), B(20, 20, 21, 21)]) == 100 + 100 - 25 + 1
    # two reference boxes (area 200) inside one predicted box of area 300
    assert union_iou([B(0, 0, 10, 10), B(20, 0, 30, 10)], [B(0, 0, 30, 10)]) == pytest.approx(2 / 3)
    # two overlapping predictions whose union is exactly the reference
    assert union_iou([B(0, 0, 15, 10)], [B(0, 0, 10, 10), B(5, 0, 15, 10)]) == pytest.approx(1.0)
    assert union_iou([], []) == 0.0 and union_iou([B(0, 0, 1, 1)], []) == 0.0


def test_greedy_and_union_matching_differ_from_hungarian() -> None:
    refs = [B(0, 0, 10, 10), B(0, 0, 20, 10)]
    # p0 (score .9) has IoU 100/120 with r0 and 120/200 with r1; p1 (.8) IoU 1 with r0, 1/2 with r1
    preds = [B(0, 0, 12, 10, 0.9), B(0, 0, 10, 10, 0.8)]
    assert match_boxes(refs, preds, "hungarian") == pytest.approx([1.0, 0.6])  # best total 1.6
    assert match_boxes(refs, preds, "greedy") == pytest.approx([100 / 120, 0.5])  # p0 first takes r0
    swapped = [B(0, 0, 12, 10, 0.1), B(0, 0, 10, 10, 0.8)]  # now p1 goes first and takes r0
    assert match_boxes(refs, swapped, "greedy") == pytest.approx([1.0, 0.6])
    unscored = [B(0, 0, 12, 10), B(0, 0, 10, 10)]  # no scores: input order
    assert match_boxes(refs, unscored, "greedy") == pytest.approx([100 / 120, 0.5])
    # union: union of refs = (0,0,20,10) (area 200); union of preds = (0,0,12,10) (area 120)
    assert match_boxes(refs, preds, "union") == pytest.approx([0.6, 0.6])
    assert match_boxes(refs, [], "union") == [0.0, 0.0]


def test_grounding_metric_reports_ap_per_class() -> None:
    studies = {"s1": Study("s1", [], "f", boxes=[B(0, 0, 10, 10, category="Cardiomegaly"),
                                                 B(50, 50, 60, 60, category="Pleural Effusion")]),
               "s2": Study("s2", [], "f", boxes=[B(0, 0, 10, 10, category="Cardiomegaly")])}
    predictions = {"s1": Prediction("s1", "r", boxes=[B(0, 0, 10, 10, category="Cardiomegaly"),
                                                      B(0, 0, 10, 10, category="Pleural Effusion")]),
                   "s2": Prediction("s2", "r", boxes=[B(40, 40, 50, 50, category="Cardiomegaly")])}
    result = compute_metrics(["grounding"], {"s1": "f", "s2": "f"}, {"s1": "r", "s2": "r"}, studies=studies,
                             predictions=predictions, options={"grounding": {"matching": "greedy"}})
    table = result.tables["grounding_per_class"].set_index("category")
    # Cardiomegaly: TP (s1) then FP (s2), no scores -> precision 1 at recall 1/2, then .5: points up to
    # 0.5 (51 of them) read 1, the rest 0 -> 51/101; Pleural Effusion: one FP -> 0
    assert table.loc["Cardiomegaly", "ap_0.5"] == pytest.approx(51 / 101)
    assert table.loc["Pleural Effusion", "ap_0.5"] == 0.0
    assert result.corpus["grounding_map_0.5"] == pytest.approx(51 / 202)
    assert result.conventions["grounding_matching"] == "greedy"
    assert result.conventions["grounding_ap_scored"].startswith("no box scores")
    # greedy: s1 refs get 1.0 and 0.0 (the effusion box has IoU 0 with both predictions), s2: 0
    assert result.corpus["grounding_miou"] == pytest.approx(1 / 3)


def test_ap_equals_cocoeval_on_real_chestx_det10_boxes() -> None:
    """Real box geometry and class frequencies (ChestX-Det10 test split, 10 classes, 1024x1024 NIH
    images): detections are seeded jittered copies of the references, some missing, some of the
    wrong class, plus strays; our per-class AP equals COCOeval's at IoU 0.5 and 0.75."""
    import json

    from tests.conftest import shared_data

    entries = json.loads(shared_data("bbox", "chestx_det10_test.json").read_text())
    rng = np.random.default_rng(0)
    classes = sorted({c for e in entries for c in e["syms"]})
    refs, dets = [], []
    for image, entry in enumerate(entries, start=1):
        for cls, (x1, y1, x2, y2) in zip(entry["syms"], entry["boxes"]):
            refs.append((image, cls, B(x1, y1, x2, y2)))
            roll = rng.random()
            if roll < 0.15:
                continue  # missed
            w, h = x2 - x1, y2 - y1
            jx, jy = rng.normal(0, 0.15 * w), rng.normal(0, 0.15 * h)
            label = str(rng.choice(classes)) if roll > 0.9 else cls
            box = B(max(0, x1 + jx), max(0, y1 + jy), min(1024, x2 + jx), min(1024, y2 + jy), round(rng.random(), 2))
            if box.x2 > box.x1 and box.y2 > box.y1:
                dets.append((image, label, box))
        if rng.random() < 0.3:  # a stray detection
            x, y = rng.uniform(0, 900, 2)
            dets.append((image, str(rng.choice(classes)), B(x, y, x + 60, y + 60, round(rng.random(), 2))))
    assert len(refs) > 500 and len(classes) == 10
    for threshold in (0.5, 0.75):
        theirs = _cocoeval_ap(refs, dets, threshold)
        ours = average_precision(refs, dets, iou_threshold=threshold, images=list(range(1, len(entries) + 1)))
        assert ours.per_class == pytest.approx(theirs, abs=1e-12)
        assert 0.0 < ours.mean < 1.0  # neither trivial nor empty


def test_real_nih_boxes_through_every_convention() -> None:
    """The NIH ChestX-ray8 box list is x,y,w,h on 1024x1024 images: read as xywh and through
    every convention and back."""
    import csv

    from boxmed_eval.boxes import BOX_FORMATS, box_from_record, from_pixel_box, to_pixel_box
    from tests.conftest import shared_data

    with shared_data("bbox", "nih_BBox_List_2017.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len(rows) == 984
    for row in rows:
        x, y, w, h = (float(v) for v in row[2:6])
        box = box_from_record([x, y, w, h], "xywh", 1024, 1024)
        assert (box.x1, box.y1, box.x2, box.y2) == (x, y, x + w, y + h)
        for fmt in BOX_FORMATS:
            back = to_pixel_box(from_pixel_box(box, fmt), fmt, 1024, 1024)
            tolerance = {"qwen": 0.5 * 1024 / 1000, "maira2": 1024 / 100 + 1}.get(fmt, 1e-9)
            assert max(abs(a - b) for a, b in zip((back.x1, back.y1, back.x2, back.y2),
                                                  (box.x1, box.y1, box.x2, box.y2))) <= tolerance
