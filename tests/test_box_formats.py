"""Every box convention (pixels x,y,w,h and x1,y1,x2,y2, fractions, Qwen2-VL 0..1000, MAIRA-2's 100
bins): hand-computed conversions, round trips on images of any size, and the import helper."""

from __future__ import annotations

import numpy as np
import pytest

from boxmed_eval.boxes import (BOX_FORMATS, MAIRA2_BINS, box_from_record, format_maira2_box, from_pixel_box,
                               parse_maira2_boxes, to_pixel_box)
from boxmed_eval.records import Box

SIZES = [(3000, 2000), (2000, 3000), (2544, 3056), (256, 256), (64, 48), (1, 1)]


def corners(box: Box) -> tuple[float, float, float, float]:
    return (box.x1, box.y1, box.x2, box.y2)


def test_hand_computed_conversions() -> None:
    assert corners(to_pixel_box((10, 20, 30, 40), "xywh")) == (10, 20, 40, 60)
    assert corners(to_pixel_box((10, 20, 30, 40), "xyxy")) == (10, 20, 30, 40)
    assert corners(to_pixel_box((0.1, 0.2, 0.5, 0.6), "norm", 2000, 1000)) == pytest.approx((200, 200, 1000, 600))
    assert corners(to_pixel_box((250, 100, 500, 400), "qwen", 2000, 1000)) == (500, 100, 1000, 400)
    # MAIRA-2: bin k -> centre (k + 0.5) / 100 of the centre square (side min(w, h)), int() truncated.
    # 3000 x 2000: square side 2000, x offset 500: x1 = int(10.5 / 100 * 2000 + 500) = 710
    assert corners(to_pixel_box((10, 20, 30, 40), "maira2", 3000, 2000)) == (710, 410, 1110, 810)
    # portrait 2000 x 3000: y offset 500
    assert corners(to_pixel_box((10, 20, 30, 40), "maira2", 2000, 3000)) == (210, 910, 610, 1310)
    # reversed corners are put in order; the image size is kept on the box
    box = to_pixel_box((30, 40, 10, 20), "xyxy", 100, 80)
    assert corners(box) == (10, 20, 30, 40) and (box.image_width, box.image_height) == (100, 80)
    assert from_pixel_box(Box(710, 410, 1110, 810), "maira2", 3000, 2000) == (10, 20, 30, 40)
    assert from_pixel_box(Box(10, 20, 40, 60), "xywh") == (10, 20, 30, 40)


def test_maira2_output_tokens_as_its_processor_reads_them() -> None:
    # the example of Maira2Processor.convert_output_to_plaintext_or_grounded_sequence: (0.555, 0.455, 0.705, 0.565)
    text = "<obj>grounded phrase <box><x55><y45><x70><y56></box></obj><obj>ungrounded phrase</obj>"
    assert parse_maira2_boxes(text) == [(55, 45, 70, 56)]
    box = to_pixel_box((55, 45, 70, 56), "maira2", 1000, 1000)
    assert corners(box) == (555, 455, 705, 565)
    assert format_maira2_box((55, 45, 70, 56)) == "<box><x55><y45><x70><y56></box>"
    with pytest.raises(ValueError, match="whole numbers 0..99"):
        to_pixel_box((55, 45, 70, 100), "maira2", 1000, 1000)


@pytest.mark.parametrize("size", SIZES)
def test_round_trips_on_images_of_any_size(size: tuple[int, int]) -> None:
    width, height = size
    rng = np.random.default_rng(width * 7 + height)
    for _ in range(50):
        x = np.sort(rng.uniform(0, width, 2))
        y = np.sort(rng.uniform(0, height, 2))
        box = Box(x[0], y[0], x[1], y[1], image_width=width, image_height=height)
        for fmt in ("xyxy", "xywh", "norm"):  # exact conventions: pixels -> fmt -> pixels
            back = to_pixel_box(from_pixel_box(box, fmt), fmt, width, height)
            assert corners(back) == pytest.approx(corners(box), rel=1e-12, abs=1e-9)
        # Qwen: integers 0..1000 survive exactly; pixels within half a unit of 1/1000 of the side
        q = from_pixel_box(box, "qwen")
        assert from_pixel_box(to_pixel_box(q, "qwen", width, height), "qwen") == q
        back = to_pixel_box(q, "qwen", width, height)
        assert max(abs(a - b) for a, b in zip(corners(back)[::2], corners(box)[::2])) <= 0.5 * width / 1000 + 1e-9
        assert max(abs(a - b) for a, b in zip(corners(back)[1::2], corners(box)[1::2])) <= 0.5 * height / 1000 + 1e-9
        # MAIRA-2: bins -> pixels -> bins is exact when a bin is at least 2 pixels wide, else off by
        # at most one pixel's worth of bins (int truncation); a box inside the centre square comes
        # back within one bin
        bins = tuple(float(v) for v in rng.integers(0, MAIRA2_BINS, 4))
        again = from_pixel_box(to_pixel_box(bins, "maira2", width, height), "maira2", width, height)
        ordered = (min(bins[0], bins[2]), min(bins[1], bins[3]), max(bins[0], bins[2]), max(bins[1], bins[3]))
        if min(width, height) >= 2 * MAIRA2_BINS:
            assert again == ordered
        else:
            assert all(abs(a - b) <= MAIRA2_BINS / min(width, height) + 1 for a, b in zip(again, ordered))
        side = min(width, height)
        if side >= MAIRA2_BINS:
            b = from_pixel_box(box, "maira2")
            back = to_pixel_box(b, "maira2", width, height)
            dx, dy = (width - side) // 2, (height - side) // 2
            inside = dx <= box.x1 and box.x2 <= dx + side and dy <= box.y1 and box.y2 <= dy + side
            if inside:
                assert max(abs(a - c) for a, c in zip(corners(back), corners(box))) <= side / MAIRA2_BINS + 1


def test_normalised_formats_need_the_image_size() -> None:
    for fmt in ("norm", "qwen", "maira2"):
        with pytest.raises(ValueError, match="width and height are needed"):
            to_pixel_box((1, 2, 3, 4), fmt)
    with pytest.raises(ValueError, match="unknown box format 'yolo'"):
        to_pixel_box((1, 2, 3, 4), "yolo")
    assert set(BOX_FORMATS) == {"xyxy", "xywh", "norm", "qwen", "maira2"}


def test_box_from_record_accepts_lists_objects_and_strings() -> None:
    assert corners(box_from_record([10, 20, 30, 40], "xywh")) == (10, 20, 40, 60)
    box = box_from_record({"x": 10, "y": 20, "w": 30, "h": 40, "score": 0.7, "phrase": "p"}, "xywh")
    assert corners(box) == (10, 20, 40, 60) and box.score == 0.7 and box.phrase == "p"
    box = box_from_record({"box": [0.5, 0.5, 1, 1], "image_width": 200, "image_height": 100}, "norm")
    assert corners(box) == (100, 50, 200, 100) and box.image_width == 200
    assert corners(box_from_record("(250,100),(500,400)", "qwen", 2000, 1000)) == (500, 100, 1000, 400)
    assert corners(box_from_record("<box><x55><y45><x70><y56></box>", "maira2", 1000, 1000)) == (555, 455, 705, 565)
    with pytest.raises(ValueError, match="use xywh"):
        box_from_record({"x": 1, "y": 1, "w": 1, "h": 1}, "xyxy")
    with pytest.raises(ValueError, match="corners"):
        box_from_record({"x1": 1, "y1": 1, "x2": 2, "y2": 2}, "xywh")
    with pytest.raises(ValueError, match="four finite numbers"):
        box_from_record([1, 2, 3], "xyxy")
    with pytest.raises(ValueError, match="must be numbers"):
        box_from_record([1, 2, "3", 4], "xyxy")
    with pytest.raises(ValueError, match="negative"):
        box_from_record([1, 2, -3, 4], "xywh")


def test_box_score_is_kept_and_omitted_when_absent() -> None:
    assert "score" not in Box(0, 0, 1, 1).to_dict()
    assert Box.from_dict(Box(0, 0, 1, 1, score=0.25).to_dict()).score == 0.25
    with pytest.raises(ValueError, match="score"):
        Box(0, 0, 1, 1, score=float("nan"))
