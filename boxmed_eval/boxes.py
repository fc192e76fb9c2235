"""Box coordinate helpers.

The harness keeps every box in **pixels of the original image** (``Box``: x1, y1 top-left,
x2, y2 bottom-right). Models speak other coordinate systems:

* Qwen2-VL (and Visual-RFT / BoxMed-RL answers) write ``(x1,y1),(x2,y2)`` with each coordinate
  normalised to 0..1000 of the image side: ``pixel = value / 1000 * side``.
* The BoxMed-RL paper feeds images resized to 1/4 of the original side; boxes predicted on the
  resized image are scaled back by ``1 / scale``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from boxmed_eval.records import Box

QWEN_COORD_MAX = 1000.0
PAPER_RESIZE_SCALE = 0.25

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX_RE = re.compile(rf"\({_NUMBER},{_NUMBER}\)\s*,?\s*\({_NUMBER},{_NUMBER}\)")


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in the same coordinates (0.0 when both are empty)."""
    inter_w = min(a.x2, b.x2) - max(a.x1, b.x1)
    inter_h = min(a.y2, b.y2) - max(a.y1, b.y1)
    inter = max(0.0, inter_w) * max(0.0, inter_h)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def qwen_to_pixels(x1: float, y1: float, x2: float, y2: float, width: int, height: int, **box_fields: object) -> Box:
    """A Qwen2-VL 0..1000 box to pixels of a ``width`` x ``height`` image. Coordinates are
    clamped to 0..1000 and put in order (x1 <= x2, y1 <= y2): models do write them reversed."""
    xs = sorted(_clamp(v, 0.0, QWEN_COORD_MAX) for v in (x1, x2))
    ys = sorted(_clamp(v, 0.0, QWEN_COORD_MAX) for v in (y1, y2))
    return Box(xs[0] / QWEN_COORD_MAX * width, ys[0] / QWEN_COORD_MAX * height,
               xs[1] / QWEN_COORD_MAX * width, ys[1] / QWEN_COORD_MAX * height,
               image_width=width, image_height=height, **box_fields)  # type: ignore[arg-type]


def pixels_to_qwen(box: Box, width: int | None = None, height: int | None = None) -> tuple[int, int, int, int]:
    """A pixel box to Qwen2-VL's integer 0..1000 coordinates (rounded)."""
    width = width or box.image_width
    height = height or box.image_height
    if not width or not height:
        raise ValueError("the image size is needed to normalise a box (Box.image_width/height)")
    return (round(box.x1 / width * QWEN_COORD_MAX), round(box.y1 / height * QWEN_COORD_MAX),
            round(box.x2 / width * QWEN_COORD_MAX), round(box.y2 / height * QWEN_COORD_MAX))


def scale_box(box: Box, factor: float) -> Box:
    """The box with every coordinate (and the image size) multiplied by ``factor``."""
    return Box(box.x1 * factor, box.y1 * factor, box.x2 * factor, box.y2 * factor, phrase=box.phrase,
               category=box.category, region=box.region,
               image_width=round(box.image_width * factor) if box.image_width else None,
               image_height=round(box.image_height * factor) if box.image_height else None,
               image_index=box.image_index)


def resized_to_original(box: Box, scale: float = PAPER_RESIZE_SCALE) -> Box:
    """A box predicted on an image resized by ``scale`` (the paper: 1/4) back to original pixels."""
    return scale_box(box, 1.0 / scale)


def original_to_resized(box: Box, scale: float = PAPER_RESIZE_SCALE) -> Box:
    return scale_box(box, scale)


def parse_box_strings(text: str) -> list[tuple[float, float, float, float]]:
    """Every ``(x1,y1),(x2,y2)`` in ``text`` (spaces allowed, decimals allowed), in order."""
    return [tuple(float(v) for v in match.groups()) for match in _BOX_RE.finditer(text)]  # type: ignore[misc]


def format_box_string(coords: Iterable[float]) -> str:
    x1, y1, x2, y2 = (int(round(v)) for v in coords)
    return f"({x1},{y1}),({x2},{y2})"


def parse_qwen_boxes(text: str, width: int, height: int, **box_fields: object) -> list[Box]:
    """The Qwen2-VL boxes of a model answer, in pixels of a ``width`` x ``height`` image."""
    return [qwen_to_pixels(*coords, width=width, height=height, **box_fields) for coords in parse_box_strings(text)]
