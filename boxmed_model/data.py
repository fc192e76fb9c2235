"""Training datasets of the three stages, built from ``Study`` records, streamed.

**Lazy rows.** A row holds only text: the image *path*, the findings, and the boxes as JSON.
Images are decoded, resized and turned into TRL's conversational rows when a row is read
(a ``datasets`` transform, :class:`StageTransform`), i.e. in the DataLoader (and its workers
when ``dataloader_num_workers > 0``). So memory holds one batch of images, not the whole
set, and the first step comes after building a text table, not after decoding every
image (MIMIC-CXR has ~270k studies; eager decoding needed hundreds of GB, see
``benchmarks/bench_boxmedrl_data.py``).

Images (paper Sec. 4.2): resized to one quarter of their height and width
(``image_scale=0.25``), aspect ratio kept; boxes are scaled by the same ratio. The
grounding targets are then written in Qwen2-VL's 0..1000 coordinates of the resized image
(identical to those of the original image, since both axes scale alike). Each study uses
its first image (the frontal view in MIMIC-CXR / MS-CXR / IU X-Ray order); boxes drawn on
another image of the study are skipped.

Rows once read are TRL's conversational prompt-completion format, with the image in
``images`` (SFT) or ``image`` (GRPO):

* MCL: ``prompt`` = MCL prompt, ``completion`` = CoT target (:mod:`boxmed_model.cot`).
  Every chain that carries a box also gets a row of its own in exactly the SVR answer
  format (``prompt`` = SVR prompt of the chain's finding, ``completion`` =
  ``<think>chain</think><answer>(x1,y1),(x2,y2)</answer>``, Qwen2-VL 0..1000 corners): the
  box R_IoU reads is where an MCL model learnt to put it, so SVR has reward signal from its
  first step. With ``grounding_warmup`` (a demo choice): also such rows for the SVR studies'
  queries when SVR trains on other studies than MCL (:func:`grounding_warmup_rows`).
* SVR: one row per (study, phrase): ``prompt`` = SVR prompt of the phrase, ``image``,
  ``solution`` = the phrase's ground-truth boxes as 0..1000 corner lists.
* Adapter: ``prompt`` = report prompt, ``completion`` = findings text.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
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
# Every lazy row has these string columns (one Arrow schema for all kinds of rows).
COLUMNS = ("id", "kind", "image_path", "text", "boxes", "solution")


def load_image(path: str | Path, scale: float = 0.25) -> tuple[Any, tuple[int, int]]:
    """The image as RGB, resized by ``scale`` on both axes; returns (image, original (w, h))."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            width, height = handle.size
            if scale != 1.0:
                # JPEG: decode at a reduced DCT scale no smaller than the target (much faster
                # and lighter than decoding full size); the bicubic resize below sets the size.
                handle.draft("RGB", (max(MIN_SIDE, round(handle.size[0] * scale)),
                                     max(MIN_SIDE, round(handle.size[1] * scale))))
            image = handle.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", file=path, fix="check the file is a PNG/JPEG image") from None
    if scale != 1.0:
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        if image.size != size:
            image = image.resize(size, Image.BICUBIC)
    return image, (width, height)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header only (no decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            return handle.size
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", file=path, fix="check the file is a PNG/JPEG image") from None


def _first_image(study: Study) -> str:
    if not study.image_paths:
        raise DataError("study has no image", record=study.id, fix="every training study needs an image path")
    return study.image_paths[0]


def _frontal_boxes(study: Study, original_size: tuple[int, int] | None, scale: float) -> list[Box]:
    """The boxes of the first image, scaled by ``scale``; ``original_size`` is read from the
    file header only when a box lacks its image size."""
    boxes = []
    for box in study.boxes:
        if box.image_index != 0:
            continue
        if box.image_width is None or box.image_height is None:
            size = original_size or image_size(_first_image(study))
            box = Box(**{**box.to_dict(), "image_width": size[0], "image_height": size[1]})
        boxes.append(scale_box(box, scale))
    return boxes


def _row(study_id: str, kind: str, image_path: str, text: str = "", boxes: str = "[]",
         solution: str = "[]") -> dict[str, str]:
    return {"id": study_id, "kind": kind, "image_path": image_path, "text": text, "boxes": boxes,
            "solution": solution}


def grounding_target(phrase: str, solution: list[list[float]], think: str | None = None) -> str:
    """The SVR answer format with the ground truth: the phrase's concept chain in ``<think>``
    (``think``, default :func:`boxmed_model.cot.render_svr_think`), its box(es) in
    ``<answer>`` (what R_format = 1 and R_IoU = 1 reward)."""
    boxes = ",".join(format_box(box) for box in solution)
    reasoning = think if think is not None else cot.render_svr_think(phrase)
    return (f"{prompts.THINK_OPEN}\n{reasoning}\n{prompts.THINK_CLOSE}\n"
            f"{prompts.ANSWER_OPEN}{boxes}{prompts.ANSWER_CLOSE}")


def mcl_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    """Lazy MCL rows: one report row per study, plus one SVR-format row per chain with a box."""
    rows = []
    for study in studies:
        path = _first_image(study)
        rows.append(_row(study.id, "mcl", path, study.findings,
                         json.dumps([b.to_dict() for b in study.boxes if b.image_index == 0])))
        if not any(b.image_index == 0 and (b.phrase or b.category) for b in study.boxes):
            continue
        # Prompts are exactly SVR's (one per phrase, svr_queries); the think is the phrase's chain.
        chains = cot.build_chains(_scaled_study(study, None, scale))
        for sid, image, phrase, solution in svr_queries([study], scale):
            chain = next((c for c in chains if list(solution[0]) in [list(b) for b in c.boxes]), None)
            think = (cot.Chain(chain.finding, chain.diseases, chain.regions).render()  # without its box
                     if chain is not None else None)
            rows.append(_row(sid, "ground", image, phrase, json.dumps(think), json.dumps(solution)))
    return rows


def _scaled_study(study: Study, original_size: tuple[int, int] | None, scale: float) -> Study:
    return Study(id=study.id, image_paths=study.image_paths, findings=study.findings,
                 boxes=_frontal_boxes(study, original_size, scale))


def svr_queries(studies: list[Study], scale: float = 0.25) -> list[tuple[str, str, str, list[list[float]]]]:
    """(study id, image path, phrase, 0..1000 boxes) per finding phrase with boxes."""
    queries = []
    for study in studies:
        if not study.boxes:
            continue
        groups: OrderedDict[str, list[list[float]]] = OrderedDict()
        for box in _frontal_boxes(study, None, scale):
            phrase = normalize_text(box.phrase) or box.category
            if not phrase:
                continue
            corners = to_qwen((box.x1, box.y1, box.x2, box.y2), box.image_width, box.image_height)
            groups.setdefault(phrase, []).append(list(corners))
        queries += [(study.id, _first_image(study), phrase, solution) for phrase, solution in groups.items()]
    if not queries:
        raise DataError("no finding phrase with a box in these studies", fix="SVR needs a dataset with boxes "
                        "(demo, ms_cxr, latte_cxr)")
    return queries


def grounding_warmup_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    """Lazy SFT rows (MCL format) that teach the SVR answer format: one per finding phrase with boxes."""
    return [_row(sid, "ground", path, phrase, json.dumps(None), json.dumps(solution))
            for sid, path, phrase, solution in svr_queries(studies, scale)]


def svr_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    """Lazy SVR rows: one per finding phrase with its boxes (several boxes of one phrase -> one row)."""
    return [_row(sid, "svr", path, phrase, solution=json.dumps(solution))
            for sid, path, phrase, solution in svr_queries(studies, scale)]


def adapter_rows(studies: list[Study], scale: float = 0.25) -> list[dict[str, Any]]:
    return [_row(study.id, "adapter", _first_image(study), study.findings) for study in studies]


@dataclass(frozen=True)
class StageTransform:
    """``datasets`` transform: a batch of lazy rows -> TRL rows with decoded, resized images.
    Picklable (a dataclass), so it runs in DataLoader worker processes."""

    scale: float = 0.25
    keep_id: bool = False

    def one(self, row: dict[str, str]) -> dict[str, Any]:
        kind = row["kind"]
        image, size = load_image(row["image_path"], self.scale)
        out: dict[str, Any]
        if kind == "mcl":
            boxes = [Box(**b) for b in json.loads(row["boxes"])]
            study = Study(id=row["id"], image_paths=[row["image_path"]], findings=row["text"], boxes=boxes)
            target = cot.render_target(cot.build_chains(_scaled_study(study, size, self.scale)), row["text"])
            out = {"prompt": prompts.mcl_messages(), "completion": [prompts.assistant_turn(target)], "images": [image]}
        elif kind == "ground":
            target = grounding_target(row["text"], json.loads(row["solution"]), json.loads(row["boxes"]))
            out = {"prompt": prompts.svr_messages(row["text"]), "completion": [prompts.assistant_turn(target)],
                   "images": [image]}
        elif kind == "adapter":
            out = {"prompt": prompts.report_messages(),
                   "completion": [prompts.assistant_turn(normalize_text(row["text"]))], "images": [image]}
        elif kind == "svr":
            out = {"phrase": row["text"], "prompt": prompts.svr_messages(row["text"]), "image": image,
                   "solution": json.loads(row["solution"])}
        else:
            raise DataError(f"unknown training row kind {kind!r}", record=row["id"])
        if self.keep_id:
            out = {"id": row["id"], **out}
        return out

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n = len(batch["kind"])
        rows = [self.one({key: batch[key][i] for key in COLUMNS}) for i in range(n)]
        return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def materialize(rows: list[dict[str, Any]], scale: float = 0.25, *, keep_id: bool = True) -> list[dict[str, Any]]:
    """The TRL rows of lazy rows, images decoded (for tests and inspection; training reads lazily)."""
    transform = StageTransform(scale, keep_id)
    return [transform.one(row) for row in rows]


def to_dataset(rows: list[dict[str, Any]], scale: float = 0.25) -> Any:
    """A ``datasets.Dataset`` of the lazy rows (text only) whose items are read through
    :class:`StageTransform` (decoded images, TRL's conversational format)."""
    from datasets import Dataset

    if not rows:
        raise DataError("no training rows", fix="check the dataset split has studies with findings and images")
    kinds = {row["kind"] for row in rows}
    if "svr" in kinds and len(kinds) > 1:
        raise DataError(f"SVR rows cannot be mixed with {sorted(kinds - {'svr'})} rows in one dataset")
    return Dataset.from_dict({key: [row[key] for row in rows] for key in COLUMNS}).with_transform(
        StageTransform(scale))
