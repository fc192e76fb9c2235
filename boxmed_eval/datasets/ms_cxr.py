"""MS-CXR 1.1.0 (phrase grounding boxes on MIMIC-CXR-JPG images).

``MS_CXR_Local_Alignment_v1.1.0.csv`` has one row per box: ``dicom_id, category_name,
label_text, path, x, y, w, h, image_width, image_height, split``; ``x, y`` is the top-left
corner and ``w, h`` the size, in pixels of the original image; a phrase with several boxes
spans several rows. ``path`` is relative to the MIMIC-CXR-JPG root
(``files/p10/p10233088/s54276838/<dicom_id>.jpg``).

The adapter yields one ``Study`` per ``dicom_id`` holding all its phrase boxes
(``Box.phrase`` = ``label_text``, ``Box.category`` = ``category_name``). Its findings text is:

- with ``reports=PATH`` (or ``reports=auto``): the MIMIC-CXR findings of the image's study,
  from the same sources as the ``mimic`` adapter (``mimic_cxr_sectioned.csv(.gz)`` or the
  ``mimic-cxr-reports`` folder of ``sSTUDY.txt`` files; ``auto`` looks under the data root), or
  from an R2Gen ``annotation.json`` (matched on ``study_id``, else ``id`` = dicom id), or a
  CSV/JSONL with an ``id`` (study id, ``s``-prefixed study id or dicom id) and a
  findings/report column. Images whose study has no findings there are dropped and counted,
  like every empty-findings study;
- without it: the image's unique phrases, in file order, each written as a sentence
  (first letter capitalised, final period) and joined with spaces.

CheXpert labels come from ``labels=PATH`` or, when present, ``<root>/mimic-cxr-2.0.0-chexpert.csv(.gz)``
(keyed by subject and study id, parsed from ``path``).

``read_ms_cxr_csv`` is the validated reader; the ``demo`` dataset reuses it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxmed_eval.datasets.base import DATASETS, SPLITS, DatasetAdapter, canonical_split
from boxmed_eval.datasets.chexpert_labels import read_chexpert_labels
from boxmed_eval.datasets.mimic_cxr import MimicReports
from boxmed_eval.datasets.r2gen_annotation import read_r2gen_annotation
from boxmed_eval.errors import DataError
from boxmed_eval.records import Box, Study, read_reports
from boxmed_eval.text import prepare_findings

log = logging.getLogger(__name__)

MS_CXR_CSV_NAME = "MS_CXR_Local_Alignment_v1.1.0.csv"
MS_CXR_COLUMNS: tuple[str, ...] = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
                                   "image_width", "image_height", "split")
# Boxes drawn by hand may overshoot the image edge by a pixel or two; such boxes are clipped,
# anything further outside is an error.
EDGE_TOLERANCE_PX = 2.0
_MIMIC_PATH_RE = re.compile(r"(?:^|/)p(?P<subject>\d+)/s(?P<study>\d+)/")


@dataclass(frozen=True)
class MsCxrRow:
    """One validated row (one box) of an MS-CXR CSV."""

    line: int  # line number in the CSV (header is line 1), for error messages
    dicom_id: str
    category_name: str
    label_text: str
    path: str
    x: float
    y: float
    w: float
    h: float
    image_width: int
    image_height: int
    split: str  # canonical: train / val / test
    region: str = ""  # optional extra column (the demo dataset writes it; MS-CXR has none)

    def to_box(self) -> Box:
        return Box.from_xywh(self.x, self.y, self.w, self.h, phrase=self.label_text, category=self.category_name,
                             region=self.region, image_width=self.image_width, image_height=self.image_height,
                             image_index=0)


def _number(row: dict[str, str], column: str, *, path: Path, line: int) -> float:
    raw = (row.get(column) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise DataError(f"column {column!r} is {raw!r}, not a number", file=path, record=f"line {line}",
                        fix="x, y, w, h, image_width and image_height must be numbers (pixels)")
    return value


def read_ms_cxr_csv(path: str | os.PathLike[str], *, edge_tolerance: float = EDGE_TOLERANCE_PX) -> list[MsCxrRow]:
    """Read and validate an MS-CXR 1.1.0 box CSV: one ``MsCxrRow`` per row, in file order.

    Raises ``DataError`` naming the file and line for: a missing file or column, an empty
    ``dicom_id``/``path``/``label_text``, a non-numeric coordinate or size, a non-positive box
    or image size, a box outside its image (beyond ``edge_tolerance`` pixels; within it the
    box is clipped), an unknown split, and rows of one ``dicom_id`` that disagree on path,
    image size or split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("MS-CXR CSV not found", file=path,
                        fix=f"pass csv=PATH (or set BOXMED_MS_CXR_CSV) to {MS_CXR_CSV_NAME}")
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MS_CXR_COLUMNS if c not in header]
            if missing:
                raise DataError(f"missing columns {missing} (found {header})", file=path,
                                fix=f"an MS-CXR 1.1.0 CSV has the columns {', '.join(MS_CXR_COLUMNS)}")
            reader.fieldnames = header
            raw_rows = [(reader.line_num, row) for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({exc})", file=path, fix="restore the file from its source") from None

    rows: list[MsCxrRow] = []
    first_of_image: dict[str, MsCxrRow] = {}
    for line, row in raw_rows:
        if None in row:  # more fields than the header has
            raise DataError("row has more fields than the header", file=path, record=f"line {line}",
                            fix="quote fields that contain commas")
        where = f"line {line}"
        text = {c: (row.get(c) or "").strip() for c in ("dicom_id", "category_name", "label_text", "path", "split")}
        for column in ("dicom_id", "path", "label_text"):
            if not text[column]:
                raise DataError(f"empty {column!r}", file=path, record=where, fix="every box row needs a dicom_id, "
                                "an image path and the phrase (label_text) it grounds")
        x, y, w, h = (_number(row, c, path=path, line=line) for c in ("x", "y", "w", "h"))
        width, height = (_number(row, c, path=path, line=line) for c in ("image_width", "image_height"))
        if width <= 0 or height <= 0 or width != int(width) or height != int(height):
            raise DataError(f"image size {width}x{height} is not a positive whole number of pixels", file=path,
                            record=where, fix="image_width and image_height are the original image's size in pixels")
        if w <= 0 or h <= 0:
            raise DataError(f"box size w={w}, h={h} is not positive", file=path, record=where,
                            fix="w and h are the box's width and height in pixels (x, y is its top-left corner)")
        if x < -edge_tolerance or y < -edge_tolerance or x + w > width + edge_tolerance or y + h > height + edge_tolerance:
            raise DataError(f"box x={x}, y={y}, w={w}, h={h} lies outside the {int(width)}x{int(height)} image",
                            file=path, record=where,
                            fix="coordinates are pixels of the original image; check they were not rescaled")
        # Clip the small overshoot the tolerance allowed.
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, width), min(y + h, height)
        split = canonical_split(text["split"])
        if split not in SPLITS:
            raise DataError(f"unknown split {text['split']!r}", file=path, record=where,
                            fix=f"split must be one of {', '.join(SPLITS)}")
        record = MsCxrRow(line=line, dicom_id=text["dicom_id"], category_name=text["category_name"],
                          label_text=prepare_findings(text["label_text"]), path=text["path"], x=x1, y=y1,
                          w=x2 - x1, h=y2 - y1, image_width=int(width), image_height=int(height), split=split,
                          region=(row.get("region") or "").strip())
        first = first_of_image.setdefault(record.dicom_id, record)
        for attribute in ("path", "image_width", "image_height", "split"):
            if getattr(first, attribute) != getattr(record, attribute):
                raise DataError(f"dicom_id {record.dicom_id!r} has {attribute} {getattr(record, attribute)!r} here "
                                f"but {getattr(first, attribute)!r} on line {first.line}", file=path, record=where,
                                fix="all rows of one image must agree on path, image size and split")
        rows.append(record)
    return rows


def group_by_image(rows: list[MsCxrRow]) -> dict[str, list[MsCxrRow]]:
    """``{dicom_id: rows}`` keeping file order (first appearance of each image)."""
    grouped: dict[str, list[MsCxrRow]] = {}
    for row in rows:
        grouped.setdefault(row.dicom_id, []).append(row)
    return grouped


def phrases_as_findings(phrases: list[str]) -> str:
    """Unique phrases in order, each as a sentence: 'small left effusion' -> 'Small left effusion.'"""
    sentences: list[str] = []
    seen: set[str] = set()
    for phrase in phrases:
        phrase = prepare_findings(phrase).rstrip(" .")
        if not phrase or phrase.lower() in seen:
            continue
        seen.add(phrase.lower())
        sentences.append(phrase[0].upper() + phrase[1:] + ".")
    return " ".join(sentences)


def _csv_has_column(path: Path, column: str) -> bool:
    """Whether a .csv file's header names ``column`` (the sectioned MIMIC report CSV has 'study')."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    return column in (c.strip() for c in header)


def mimic_ids_from_path(path: str) -> tuple[str, str]:
    """``(subject_id, study_id)`` from ``files/p10/p10233088/s54276838/x.jpg`` ("" when absent)."""
    match = _MIMIC_PATH_RE.search(path.replace("\\", "/"))
    return (match.group("subject"), match.group("study")) if match else ("", "")


def read_findings_source(path: Path) -> dict[str, str]:
    """Findings keyed by every id a study may be looked up with: from an R2Gen
    ``annotation.json`` (``study_id`` and ``id``), or a CSV/JSONL read by ``read_reports``."""
    findings: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        for _split, _index, entry in read_r2gen_annotation(path):
            text = prepare_findings(entry.get("report"))
            findings[str(entry["id"])] = text
            if entry.get("study_id") not in (None, ""):
                findings[str(entry["study_id"]).lstrip("s")] = text
        return findings
    for key, text in read_reports(path, role="findings", allow_empty=True).items():
        findings[key.strip()] = prepare_findings(text)
        if key.strip().startswith("s") and key.strip()[1:].isdigit():
            findings[key.strip()[1:]] = findings[key.strip()]
    return findings


@DATASETS.register("ms_cxr")
class MsCxr(DatasetAdapter):
    description = ("MS-CXR 1.1.0 phrase grounding: 1,162 phrase-box pairs on MIMIC-CXR-JPG images, "
                   "one study per image with all its boxes")
    needs = ("--data-root (or BOXMED_MIMIC_ROOT) = the MIMIC-CXR-JPG root (holding files/); "
             f"options: csv=PATH (default <root>/{MS_CXR_CSV_NAME} or BOXMED_MS_CXR_CSV), "
             "reports=PATH|auto (sectioned CSV, mimic-cxr-reports folder, annotation.json or id/findings CSV; "
             "default: the phrases as findings), "
             "labels=PATH (CheXpert CSV). PhysioNet credentialed data")
    env_var = "BOXMED_MIMIC_ROOT"
    credentialed = True
    report_words = 200  # with reports=: MIMIC-CXR findings

    def csv_path(self) -> Path:
        option = self.options.get("csv") or os.environ.get("BOXMED_MS_CXR_CSV")
        return Path(option).expanduser() if option else self.data_root / MS_CXR_CSV_NAME

    def _labels(self) -> tuple[dict[str, dict[str, int | None]] | None, Path | None]:
        option = self.options.get("labels")
        if option:
            path = Path(option).expanduser()
            if not path.is_file():
                raise DataError("CheXpert label CSV not found", file=path, fix="check the labels=PATH option")
        else:
            path = next((p for p in (self.data_root / "mimic-cxr-2.0.0-chexpert.csv.gz",
                                     self.data_root / "mimic-cxr-2.0.0-chexpert.csv") if p.is_file()), None)
            if path is None:
                return None, None
        return read_chexpert_labels(path, key_columns=("subject_id", "study_id")), path

    def _findings_source(self) -> Callable[[str, str, str], str] | None:
        """``(subject_id, study_id, dicom_id) -> findings`` from the reports option, or None."""
        option = self.options.get("reports")
        if not option:
            return None
        if str(option).strip().lower() == "auto":
            found = MimicReports.locate(self.data_root, None)
            if found is None:
                raise DataError("reports=auto: no MIMIC-CXR reports under the data root", file=self.data_root,
                                fix="pass reports=PATH to mimic_cxr_sectioned.csv or the mimic-cxr-reports folder")
            return lambda subject, study, _dicom: found.findings(subject, study) or ""
        path = Path(option).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self.data_root / path
        if path.is_dir() or path.name.endswith(".gz") or _csv_has_column(path, "study"):
            reports = MimicReports(path)
            return lambda subject, study, _dicom: reports.findings(subject, study) or ""
        table = read_findings_source(path)
        return lambda _subject, study, dicom: table.get(study) or table.get(dicom) or ""

    def load(self, split: str = "test") -> list[Study]:
        split = self.check_split(split)
        csv_file = self.csv_path()
        rows = read_ms_cxr_csv(csv_file)
        findings_of = self._findings_source()
        labels, labels_file = self._labels()
        studies: list[Study] = []
        for dicom_id, image_rows in group_by_image(rows).items():
            first = image_rows[0]
            if first.split != split:
                continue
            where = f"line {first.line} (dicom_id {dicom_id})"
            image = self.image_path(first.path, file=csv_file, record=where)
            subject_id, study_id = mimic_ids_from_path(first.path)
            if findings_of is not None:
                findings = findings_of(subject_id, study_id, dicom_id)
            else:
                findings = phrases_as_findings([r.label_text for r in image_rows])
            study_labels = None
            if labels is not None:
                study_labels = labels.get(f"{subject_id}/{study_id}")
                if study_labels is None:
                    log.debug("%s: no CheXpert labels for %s/%s in %s", self.name, subject_id, study_id, labels_file)
            meta: dict[str, Any] = {"dicom_id": dicom_id, "subject_id": subject_id, "study_id": study_id,
                                    "findings_source": "reports" if findings_of is not None else "phrases"}
            studies.append(Study(id=dicom_id, image_paths=[image], findings=findings, split=split,
                                 labels=study_labels, boxes=[r.to_box() for r in image_rows], meta=meta))
        return self.finish(studies, split, source=csv_file)
