"""Box coordinate helpers.

The harness keeps every box in **pixels of the original image** (``Box``: x1, y1 top-left,
x2, y2 bottom-right). Models speak other coordinate systems:

* Qwen2-VL (and Visual-RFT / BoxMed-RL answers) write ``(x1,y1),(x2,y2)`` with each coordinate
  normalised to 0..1000 of the image side: ``pixel = value / 1000 * side``.
* The BoxMed-RL paper feeds images resized to 1/4 of the original side; boxes predicted on the
  resized image are scaled back by ``1 / scale``.
* Imported predictions may use any convention of :data:`BOX_FORMATS` (``--box-format``):
  MS-CXR's ``x,y,w,h`` pixels, corner pixels, fractions 0..1, Qwen2-VL's 0..1000, MAIRA-2's
  100 bins (``<obj>phrase<box><x10><y20><x30><y40></box></obj>``, on the centre-cropped square).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

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
               image_index=box.image_index, score=box.score)


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


# ---------------------------------------------------------------------------- box conventions

BOX_FORMATS: dict[str, str] = {
    "xyxy": "absolute pixels x1,y1,x2,y2 (top-left, bottom-right; the harness's own)",
    "xywh": "absolute pixels x,y,w,h (top-left corner and size: MS-CXR, COCO)",
    "norm": "x1,y1,x2,y2 as fractions 0..1 of the image width and height",
    "qwen": "x1,y1,x2,y2 in Qwen2-VL's 0..1000 (value / 1000 * side); Visual-RFT and BoxMed-RL answers",
    "maira2": "MAIRA-2's 100 bins x1,y1,x2,y2 on the centre-cropped square (tokens <xN><yN><xN><yN>)",
}
"""The coordinate conventions ``--box-format`` accepts (all are turned into pixel ``Box`` es)."""

MAIRA2_BINS = 100
_MAIRA2_RE = re.compile(r"<x(\d+)><y(\d+)><x(\d+)><y(\d+)>")


def check_box_format(fmt: str) -> str:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"unknown box format {fmt!r}; choose one of {', '.join(BOX_FORMATS)}")
    return fmt


def _maira2_crop(width: float, height: float) -> tuple[float, float, float]:
    """MAIRA-2's image processor crops the centre square of side min(w, h) before the model
    sees it; its boxes are fractions of that square (offsets use integer division, as there)."""
    side = min(width, height)
    return side, (width - side) // 2, (height - side) // 2


def to_pixel_box(coords: Sequence[float], fmt: str, width: float | None = None, height: float | None = None,
                 **box_fields: Any) -> Box:
    """Four numbers in convention ``fmt`` -> a ``Box`` in pixels of a ``width`` x ``height`` image.

    Every normalised convention needs the image size. Corners written in reverse order are put
    in order (models do write them reversed); ``qwen`` clamps to 0..1000 as Qwen2-VL's own
    post-processing does, ``maira2`` follows MAIRA-2's processor exactly: bin ``k`` is the bin
    centre ``(k + 0.5) / 100`` of the centre-cropped square, mapped to original pixels with
    ``int(...)`` truncation (``Maira2Processor.adjust_box_for_original_image_size``)."""
    check_box_format(fmt)
    values = [float(v) for v in coords]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box needs four finite numbers, got {list(coords)!r}")
    a, b, c, d = values
    if fmt == "xywh":
        if c < 0 or d < 0:
            raise ValueError(f"box width/height w={c}, h={d} is negative")
        a, b, c, d = a, b, a + c, b + d
    elif fmt != "xyxy":
        if not width or not height:
            raise ValueError(f"box format {fmt!r} is normalised: the image width and height are needed")
        if fmt == "norm":
            a, b, c, d = a * width, b * height, c * width, d * height
        elif fmt == "qwen":
            return qwen_to_pixels(a, b, c, d, width=int(width), height=int(height), **box_fields)
        else:  # maira2
            if any(v < 0 or v >= MAIRA2_BINS or v != int(v) for v in values):
                raise ValueError(f"MAIRA-2 box bins must be whole numbers 0..{MAIRA2_BINS - 1}, got {values!r}")
            side, dx, dy = _maira2_crop(width, height)
            a, b, c, d = (int((v + 0.5) / MAIRA2_BINS * side + off) for v, off in ((a, dx), (b, dy), (c, dx), (d, dy)))
    box_fields.setdefault("image_width", int(width) if width else None)
    box_fields.setdefault("image_height", int(height) if height else None)
    return Box(min(a, c), min(b, d), max(a, c), max(b, d), **box_fields)


def from_pixel_box(box: Box, fmt: str, width: float | None = None, height: float | None = None) -> tuple[float, ...]:
    """A pixel ``Box`` -> its four numbers in convention ``fmt`` (the inverse of
    :func:`to_pixel_box`; ``qwen`` rounds to integers, ``maira2`` bins as ``floor(f * 100)``
    clipped to 0..99 on the centre-cropped square, the inverse of MAIRA-2's bin-centre decoding)."""
    check_box_format(fmt)
    width = width or box.image_width
    height = height or box.image_height
    if fmt == "xyxy":
        return (box.x1, box.y1, box.x2, box.y2)
    if fmt == "xywh":
        return (box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1)
    if not width or not height:
        raise ValueError(f"box format {fmt!r} is normalised: the image width and height are needed")
    if fmt == "norm":
        return (box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height)
    if fmt == "qwen":
        return tuple(float(v) for v in pixels_to_qwen(box, int(width), int(height)))
    side, dx, dy = _maira2_crop(width, height)

    def to_bin(value: float, offset: float) -> float:
        return float(min(MAIRA2_BINS - 1, max(0, math.floor((value - offset) / side * MAIRA2_BINS))))

    return (to_bin(box.x1, dx), to_bin(box.y1, dy), to_bin(box.x2, dx), to_bin(box.y2, dy))


def parse_maira2_boxes(text: str) -> list[tuple[int, int, int, int]]:
    """Every ``<xN><yN><xN><yN>`` of a MAIRA-2 output, as bins, in order."""
    return [tuple(int(v) for v in match.groups()) for match in _MAIRA2_RE.finditer(text)]  # type: ignore[misc]


def format_maira2_box(bins: Iterable[float]) -> str:
    x1, y1, x2, y2 = (int(v) for v in bins)
    return f"<box><x{x1}><y{y1}><x{x2}><y{y2}></box>"


def box_from_record(item: Any, fmt: str, width: float | None = None, height: float | None = None) -> Box:
    """One box of an imported prediction file, in convention ``fmt``: a list of four numbers, an
    object with ``x1,y1,x2,y2`` (or ``x,y,w,h``, or ``box``/``bbox``: four numbers) and optional
    ``score``, ``phrase``, ``category``, ``region``, ``image_index``, ``image_width``/``image_height``
    (which override the size passed in), or a string (``(x1,y1),(x2,y2)`` or MAIRA-2 tokens).
    Raises ``ValueError`` with the reason; callers add file and record."""
    fields: dict[str, Any] = {}
    if isinstance(item, str):
        found = [tuple(map(float, b)) for b in (parse_maira2_boxes(item) or parse_box_strings(item))]
        if len(found) != 1:
            raise ValueError(f"expected one box in the text {item!r}, found {len(found)}")
        coords: Sequence[float] = found[0]
    elif isinstance(item, (list, tuple)):
        coords = item
    elif isinstance(item, dict):
        width = item.get("image_width") or width
        height = item.get("image_height") or height
        if "score" in item and item["score"] is not None:
            fields["score"] = float(item["score"])
        for key in ("phrase", "category", "region"):
            if item.get(key) is not None:
                fields[key] = str(item[key])
        if item.get("image_index") is not None:
            fields["image_index"] = int(item["image_index"])
        if all(k in item for k in ("x1", "y1", "x2", "y2")):
            coords = [item[k] for k in ("x1", "y1", "x2", "y2")]
            if fmt == "xywh":
                raise ValueError("--box-format xywh, but the box has x1,y1,x2,y2 keys (corners)")
        elif all(k in item for k in ("x", "y", "w", "h")):
            coords = [item[k] for k in ("x", "y", "w", "h")]
            if fmt != "xywh":
                raise ValueError(f"the box has x,y,w,h keys but --box-format is {fmt!r} (use xywh)")
        elif isinstance(item.get("box", item.get("bbox")), (list, tuple)):
            coords = item.get("box", item.get("bbox"))
        else:
            raise ValueError(f"a box object needs x1,y1,x2,y2 (or x,y,w,h, or box: [4 numbers]); keys: {sorted(item)}")
    else:
        raise ValueError(f"a box must be a list of four numbers, an object or a string, not {type(item).__name__}")
    if isinstance(coords, (list, tuple)) and any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in coords):
        raise ValueError(f"box coordinates must be numbers, got {list(coords)!r}")
    return to_pixel_box(coords, fmt, width, height, **fields)
