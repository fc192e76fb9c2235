"""Training datasets of the three stages, built from ``Study`` records.

Images (paper Sec. 4.2): resized to one quarter of their height and width
(``image_scale=0.25``), aspect ratio kept; boxes are scaled by the same ratio. The
grounding targets are then written in Qwen2-VL's 0..1000 coordinates of the resized image
(identical to those of the original image, since both axes scale alike). Each study uses
its first image (the frontal view in MIMIC-CXR / MS-CXR / IU X-Ray order); boxes drawn on
another image of the study are skipped.

Rows are TRL's conversational prompt-completion format, with the image in ``images``
(SFT) or ``image`` (GRPO):

* MCL: ``prompt`` = MCL prompt, ``completion`` = CoT target (:mod:`boxmed_model.cot`).
  With ``grounding_warmup`` (a demo choice, not the paper's): also one row per SVR query,
  ``prompt`` = SVR prompt, ``completion`` = :func:`grounding_target` (the SVR answer format).
* SVR: one row per (study, phrase): ``prompt`` = SVR prompt of the phrase, ``image``,
  ``solution`` = the phrase's ground-truth boxes as 0..1000 corner lists.
* Adapter: ``prompt`` = report prompt, ``completion`` = findings text.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from boxmed_eval.boxes import scale_box
from boxmed_eval.errors import DataError
from boxmed_eval.records import Box, Study
from boxmed_eval.text import normalize_text
from boxmed_model import cot, prompts
from boxmed_model.rewards import format_box, to_qwen

log = logging.getLogger(__name__)

MIN_SIDE = 28  # Qwen2-VL patches are 14 px and merged 2x2: smaller images cannot be encoded


def load_image(path: str | Path, scale: float = 0.25) -> tuple[Any, tuple[int, int]]:
    """The image as RGB, resized by ``scale`` on both axes; returns (image, original (w, h))."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", file=path, fix="check the file is a PNG/JPEG image") from None
    width, height = image.size
    if scale != 1.0:
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        image = image.resize(size, Image.BICUBIC)
    return image, (width, height)


def _first_image(study: Study) -> str:
    if not study.image_paths:
        raise DataError("study has no image", record=study.id, fix="every training study needs an image path")
    return study.image_paths[0]


def _frontal_boxes(study: Study, original_size: tuple[int, int], scale: float) -> list[Box]:
    boxes = []
    for box in study.boxes:
        if box.image_index != 0:
            continue
        if box.image_width is None or box.image_height is None:
            box = Box(**{**box.to_dict(), "image_width": original_size[0], "image_height": original_size[1]})
        boxes.append(scale_box(box, scale))
    return boxes


def mcl_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    rows = []
    for study in studies:
        image, size = load_image(_first_image(study), scale)
        scaled = Study(id=study.id, image_paths=study.image_paths, findings=study.findings,
                       boxes=_frontal_boxes(study, size, scale))
        target = cot.render_target(cot.build_chains(scaled), study.findings)
        rows.append({"id": study.id, "prompt": prompts.mcl_messages(), "completion": [prompts.assistant_turn(target)],
                     "images": [image]})
    return rows


def grounding_target(phrase: str, solution: list[list[float]]) -> str:
    """The SVR answer format with the ground truth: the phrase's concept chain in ``<think>``,
    its box(es) in ``<answer>`` (what R_format = 1 and R_IoU = 1 reward)."""
    boxes = ",".join(format_box(box) for box in solution)
    return (f"{prompts.THINK_OPEN}\n{cot.render_svr_think(phrase)}\n{prompts.THINK_CLOSE}\n"
            f"{prompts.ANSWER_OPEN}{boxes}{prompts.ANSWER_CLOSE}")


def grounding_warmup_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    """SFT rows (MCL format) that teach the SVR answer format: one per finding phrase with boxes."""
    return [{"id": row["id"], "prompt": row["prompt"],
             "completion": [prompts.assistant_turn(grounding_target(row["phrase"], row["solution"]))],
             "images": [row["image"]]}
            for row in svr_rows(studies, scale)]


def svr_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    """One row per finding phrase with its boxes (several boxes of one phrase -> one row)."""
    rows = []
    for study in studies:
        if not study.boxes:
            continue
        image, size = load_image(_first_image(study), scale)
        groups: OrderedDict[str, list[list[float]]] = OrderedDict()
        for box in _frontal_boxes(study, size, scale):
            phrase = normalize_text(box.phrase) or box.category
            if not phrase:
                continue
            corners = to_qwen((box.x1, box.y1, box.x2, box.y2), box.image_width, box.image_height)
            groups.setdefault(phrase, []).append(list(corners))
        for phrase, solution in groups.items():
            rows.append({"id": study.id, "phrase": phrase, "prompt": prompts.svr_messages(phrase),
                         "image": image, "solution": solution})
    if not rows:
        raise DataError("no finding phrase with a box in these studies", fix="SVR needs a dataset with boxes "
                        "(demo, ms_cxr, latte_cxr)")
    return rows


def adapter_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    rows = []
    for study in studies:
        image, _ = load_image(_first_image(study), scale)
        rows.append({"id": study.id, "prompt": prompts.report_messages(),
                     "completion": [prompts.assistant_turn(normalize_text(study.findings))], "images": [image]})
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` (what TRL trainers take); images stay PIL images."""
    from datasets import Dataset

    if not rows:
        raise DataError("no training rows", fix="check the dataset split has studies with findings and images")
    return Dataset.from_list(rows)
