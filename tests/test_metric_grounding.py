"""Grounding maths on hand-computed boxes, matching rules, coordinate conversions."""

from __future__ import annotations

import math

import pytest

from boxmed_eval.boxes import (format_box_string, iou, original_to_resized, parse_box_strings, parse_qwen_boxes,
                               pixels_to_qwen, qwen_to_pixels, resized_to_original)
from boxmed_eval.metrics.base import compute_metrics
from boxmed_eval.metrics.grounding import match_boxes
from boxmed_eval.records import Box, Prediction, Study


def B(x1: float, y1: float, x2: float, y2: float, **kw: object) -> Box:
    return Box(x1, y1, x2, y2, **kw)  # type: ignore[arg-type]


def test_iou_hand_computed() -> None:
    assert iou(B(0, 0, 10, 10), B(0, 0, 10, 10)) == 1.0
    assert iou(B(0, 0, 10, 10), B(5, 0, 15, 10)) == pytest.approx(50 / 150)  # half overlap
    assert iou(B(0, 0, 10, 10), B(5, 5, 15, 15)) == pytest.approx(25 / 175)  # corner overlap
    assert iou(B(0, 0, 10, 10), B(20, 20, 30, 30)) == 0.0  # disjoint
    assert iou(B(0, 0, 10, 10), B(10, 0, 20, 10)) == 0.0  # touching edges
    assert iou(B(0, 0, 10, 10), B(2, 2, 7, 7)) == pytest.approx(25 / 100)  # containment
    assert iou(B(2, 2, 7, 7), B(0, 0, 10, 10)) == pytest.approx(25 / 100)  # symmetric
    assert iou(B(1, 1, 1, 1), B(1, 1, 1, 1)) == 0.0  # empty boxes


def test_matching_rules_with_several_boxes() -> None:
    refs = [B(0, 0, 10, 10), B(100, 100, 110, 110), B(200, 200, 210, 210)]
    preds = [B(100, 100, 110, 120),  # IoU 0.5 with ref 1
             B(0, 0, 10, 10),         # IoU 1 with ref 0
             B(0, 0, 10, 5)]          # IoU 0.5 with ref 0 (but ref 0 is taken)
    assert match_boxes(refs, preds, "hungarian") == pytest.approx([1.0, 0.5, 0.0])
    # one good box cannot serve two references under Hungarian matching; it can under "best"
    two_refs = [B(0, 0, 10, 10), B(0, 0, 10, 10)]
    assert match_boxes(two_refs, [B(0, 0, 10, 10)], "hungarian") == [1.0, 0.0]
    assert match_boxes(two_refs, [B(0, 0, 10, 10)], "best") == [1.0, 1.0]
    # Hungarian maximises the total, not greedily the first reference
    refs2 = [B(0, 0, 10, 10), B(0, 0, 20, 10)]
    preds2 = [B(0, 0, 10, 10), B(0, 0, 18, 10)]
    assert sum(match_boxes(refs2, preds2)) == pytest.approx(1.0 + 0.9)
    # boxes only pair on the same image
    assert match_boxes([B(0, 0, 10, 10, image_index=1)], [B(0, 0, 10, 10, image_index=0)]) == [0.0]
    assert match_boxes([B(0, 0, 10, 10)], []) == [0.0]


def test_grounding_metric_corpus_and_per_study() -> None:
    studies = {
        "s1": Study("s1", [], "f", boxes=[B(0, 0, 10, 10), B(100, 100, 110, 110)]),
        "s2": Study("s2", [], "f", boxes=[B(0, 0, 10, 10)]),
        "s3": Study("s3", [], "f", boxes=[B(0, 0, 10, 10)]),
        "s4": Study("s4", [], "f"),  # no reference boxes: not scored
    }
    predictions = {
        "s1": Prediction("s1", "r", boxes=[B(0, 0, 10, 10), B(100, 100, 110, 120)]),  # 1.0, 0.5
        "s2": Prediction("s2", "r", boxes=[B(5, 0, 15, 10)]),  # 1/3
        "s3": Prediction("s3", "r"),  # no boxes: 0
        "s4": Prediction("s4", "r", boxes=[B(0, 0, 1, 1)]),
    }
    refs = {k: "f" for k in studies}
    result = compute_metrics(["grounding"], refs, {k: "r" for k in refs}, studies=studies, predictions=predictions)
    ious = [1.0, 0.5, 1 / 3, 0.0]
    assert result.corpus["grounding_miou"] == pytest.approx(sum(ious) / 4)
    assert result.corpus["grounding_acc_0.3"] == pytest.approx(3 / 4)
    assert result.corpus["grounding_acc_0.5"] == pytest.approx(2 / 4)
    assert result.corpus["grounding_acc_0.7"] == pytest.approx(1 / 4)
    assert result.corpus["grounding_boxes"] == 4
    per = result.per_sample["grounding_miou"]
    assert per["s1"] == pytest.approx(0.75) and per["s2"] == pytest.approx(1 / 3) and per["s3"] == 0.0
    assert math.isnan(per["s4"])
    assert result.per_sample["grounding_acc_0.5"]["s1"] == 1.0
    assert result.conventions["grounding_matching"] == "hungarian"


def test_grounding_skips_with_a_message_without_boxes() -> None:
    studies = {"s1": Study("s1", [], "f", boxes=[B(0, 0, 10, 10)])}
    result = compute_metrics(["grounding"], {"s1": "f"}, {"s1": "r"}, studies=studies,
                             predictions={"s1": Prediction("s1", "r")})
    assert not result.corpus and any("no boxes" in m for m in result.messages)
    result = compute_metrics(["grounding"], {"s1": "f"}, {"s1": "r"}, studies={"s1": Study("s1", [], "f")},
                             predictions={"s1": Prediction("s1", "r", boxes=[B(0, 0, 1, 1)])})
    assert not result.corpus and any("reference boxes" in m for m in result.messages)


def test_prediction_on_another_image_size_is_rescaled() -> None:
    ref = B(400, 400, 800, 800, image_width=2000, image_height=2000)
    pred = B(100, 100, 200, 200, image_width=500, image_height=500)  # the same box at 1/4 size
    assert match_boxes([ref], [pred]) == [pytest.approx(1.0)]


def test_qwen_coordinates_round_trip_and_parsing() -> None:
    box = qwen_to_pixels(250, 100, 500, 400, width=2000, height=1000)
    assert (box.x1, box.y1, box.x2, box.y2) == (500.0, 100.0, 1000.0, 400.0)
    assert pixels_to_qwen(box) == (250, 100, 500, 400)
    # reversed and out-of-range coordinates are ordered and clamped
    box = qwen_to_pixels(500, 400, 250, 1200, width=1000, height=1000)
    assert (box.x1, box.y1, box.x2, box.y2) == (250.0, 400.0, 500.0, 1000.0)
    text = "<answer>left effusion (12,340),(455, 880) and ( 600,100 ),(700,200)</answer>"
    assert parse_box_strings(text) == [(12, 340, 455, 880), (600, 100, 700, 200)]
    assert format_box_string((12.2, 340, 455, 879.6)) == "(12,340),(455,880)"
    boxes = parse_qwen_boxes(text, width=1000, height=2000, phrase="effusion")
    assert (boxes[0].x1, boxes[0].y1, boxes[0].x2, boxes[0].y2) == (12.0, 680.0, 455.0, 1760.0)
    assert boxes[0].phrase == "effusion" and boxes[0].image_width == 1000
    assert parse_box_strings("no box here (1,2)") == []


def test_paper_quarter_resize_round_trip() -> None:
    original = B(400, 800, 1200, 1600, image_width=2048, image_height=2500, phrase="p")
    small = original_to_resized(original)
    assert (small.x1, small.y1, small.x2, small.y2) == (100, 200, 300, 400)
    assert (small.image_width, small.image_height) == (512, 625)
    back = resized_to_original(small)
    assert (back.x1, back.y1, back.x2, back.y2, back.image_width, back.image_height) == (400, 800, 1200, 1600, 2048, 2500)
    assert back.phrase == "p"
