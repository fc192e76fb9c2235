"""Records that flow through the harness (Study, Prediction, Box) and their JSONL/CSV I/O.

Coordinates of a ``Box`` are pixels of the original image (x1, y1 top-left; x2, y2
bottom-right, exclusive), whatever format a dataset stores them in.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, DataError

CHEXPERT_CLASSES: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices", "No Finding",
)
"""The 14 CheXpert observations in CheXbert head order. Always index labels by name."""


@dataclass
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    phrase: str = ""
    category: str = ""
    region: str = ""
    image_width: int | None = None
    image_height: int | None = None
    image_index: int = 0  # which of the study's images the box is drawn on
    score: float | None = None  # a model's confidence (ranks detections for AP); None: not given

    def __post_init__(self) -> None:
        for name in ("x1", "y1", "x2", "y2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"box coordinate {name}={value!r} is not a finite number")
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"box ({self.x1},{self.y1},{self.x2},{self.y2}) has x2<x1 or y2<y1")
        if self.score is not None and (isinstance(self.score, bool) or not isinstance(self.score, (int, float))
                                       or not math.isfinite(self.score)):
            raise ValueError(f"box score {self.score!r} is not a finite number")

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float, **kw: Any) -> "Box":
        return cls(float(x), float(y), float(x) + float(w), float(y) + float(h), **kw)

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["score"] is None:  # files written before box scores existed stay byte-identical
            del data["score"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Box":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class Study:
    id: str
    image_paths: list[str]
    findings: str
    split: str = "test"
    labels: dict[str, int | None] | None = None  # CheXpert: 1 / 0 / -1 / None (blank)
    boxes: list[Box] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["boxes"] = [b.to_dict() for b in self.boxes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Study":
        data = dict(data)
        data["boxes"] = [Box.from_dict(b) for b in data.get("boxes") or []]
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class Prediction:
    id: str
    report: str
    reasoning: str | None = None
    boxes: list[Box] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "report": self.report}
        if self.reasoning is not None:
            data["reasoning"] = self.reasoning
        if self.boxes:
            data["boxes"] = [b.to_dict() for b in self.boxes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Prediction":
        return cls(id=str(data["id"]), report=data["report"], reasoning=data.get("reasoning"),
                   boxes=[Box.from_dict(b) for b in data.get("boxes") or []])


# ---------------------------------------------------------------------------- JSONL


def iter_jsonl(path: str | os.PathLike[str], *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object). A malformed line raises DataError naming file and line.

    ``tolerate_truncated_tail`` skips a last line without a newline that does not parse:
    that is what a process killed mid-write leaves behind, and a resumed run rewrites it.
    """
    path = Path(path)
    lines = read_text(path).splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_truncated_tail and number == len(lines) and not line.endswith("\n"):
                return
            raise DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", file=path,
                            record=f"line {number}", fix="each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", file=path, record=f"line {number}",
                            fix='write one object per line, e.g. {"id": "...", "report": "..."}')
        if "\\u" in line:
            check_encodable(obj, file=path, record=f"line {number}")
        yield number, obj


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 raise a DataError naming the line."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start})", file=path,
                        record=f"line {line}",
                        fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8)") from None
    return text[1:] if text.startswith("\ufeff") else text  # a BOM is not part of the first field


def check_encodable(obj: Any, *, file: object, record: object) -> None:
    """Reject strings that cannot be written back as UTF-8 (lone surrogates such as a JSON
    ``"\\ud800"``): they would fail much later, when the run directory is written."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"text holds an unpaired surrogate {exc.object[exc.start:exc.end]!r} (invalid Unicode)",
                        file=file, record=record,
                        fix="write the character itself, or a valid \\uXXXX\\uXXXX surrogate pair") from None


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write JSONL atomically (temp file + rename)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a file so that readers see the old or the new content, never a half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, UnicodeEncodeError) as exc:
        # never leave the temp file behind (a full disk, a read-only folder, bad text)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BoxmedError(f"{path}: could not write the file ({reason}); nothing was changed") from None


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], *, what: str = "file", fix: str | None = None) -> Any:
    """Parse a JSON file; a missing or malformed file raises a DataError naming it."""
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        raise DataError(f"{what} not found", file=path, fix=fix or "check the path") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", file=path,
                        fix=fix) from None


# ---------------------------------------------------------------------------- reports


REPORT_COLUMNS = ("report", "findings", "text", "prediction", "reference")


def read_studies(path: str | os.PathLike[str], *, fix: str | None = None) -> dict[str, "Study"]:
    """A JSONL file of :class:`Study` records (a run's references.jsonl, or ``--studies``) by id;
    a malformed record is a :class:`DataError` naming the line."""
    studies: dict[str, Study] = {}
    for number, obj in iter_jsonl(path):
        try:
            study = Study.from_dict(obj)
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"invalid study record ({exc})", file=path, record=f"line {number}", fix=fix) from None
        studies[study.id] = study
    return studies


def read_reports(path: str | os.PathLike[str], *, role: str = "report", allow_empty: bool = False) -> dict[str, str]:
    """Read ``{id: report}`` from a JSONL or CSV file with an ``id`` and a ``report`` column.

    ``findings``, ``text``, ``prediction`` or ``reference`` are accepted in place of ``report``.
    Errors name the file and record: missing columns, duplicate ids, empty reports
    (unless ``allow_empty``: an empty generated report is a legitimate, zero-scoring output).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{role} file not found", file=path, fix="check the path")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        rows = [(f"line {n}", obj) for n, obj in iter_jsonl(path)]
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg} at line {exc.lineno})", file=path,
                            fix="use JSONL (one object per line) or a JSON list of objects") from None
        if isinstance(data, dict):  # {id: report}
            data = [{"id": k, "report": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise DataError("expected a list of objects or an {id: report} mapping", file=path)
        rows = [(f"item {i}", obj) for i, obj in enumerate(data)]
    elif path.suffix.lower() in {".csv", ".tsv"}:
        rows = _read_csv_rows(path)
    else:
        raise DataError(f"unsupported {role} file type {path.suffix!r}", file=path,
                        fix="use .jsonl, .json or .csv with 'id' and 'report' columns")
    if not rows:
        raise DataError(f"no {role}s in the file (it is empty)", file=path,
                        fix=f"write one record per study with 'id' and 'report' (JSONL, JSON or CSV)")
    reports: dict[str, str] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError("expected an object", file=path, record=where)
        if "id" not in row or row["id"] in (None, ""):
            raise DataError("missing 'id'", file=path, record=where,
                            fix=f"every {role} needs an 'id' matching the reference study id")
        column = next((c for c in REPORT_COLUMNS if c in row), None)
        if column is None:
            raise DataError(f"no report column (looked for {', '.join(REPORT_COLUMNS)})", file=path, record=where,
                            fix="name the text column 'report'")
        study_id = str(row["id"])
        text = row[column]
        if text is None or (isinstance(text, float) and math.isnan(text)):
            text = ""
        if not isinstance(text, str):
            raise DataError(f"{column!r} is not text", file=path, record=f"{where} (id {study_id})")
        if study_id in reports:
            raise DataError(f"duplicate id {study_id!r}", file=path, record=where,
                            fix="each study must appear once; remove or rename the duplicate")
        if not text.strip() and not allow_empty:
            raise DataError(f"empty {role}", file=path, record=f"{where} (id {study_id})",
                            fix=f"drop the record or write its {role} text")
        check_encodable([study_id, text], file=path, record=f"{where} (id {study_id!r})")
        reports[study_id] = text
    return reports


def _read_csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """CSV rows as (where, row). ``strict``: an unclosed quote is an error naming the line where
    the quoted field opened, instead of swallowing the rest of the file into one report."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True,
                            delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    rows: list[tuple[str, dict[str, Any]]] = []
    started = 2
    try:
        for row in reader:
            rows.append((f"row {len(rows) + 2} (line {started})", dict(row)))
            started = reader.line_num + 1
            if any(str(v).strip() for v in row.get(None) or []):  # more fields than the header
                raise DataError(f"{len(row[None])} more field(s) than the header has", file=path,
                                record=f"line {reader.line_num}", fix="quote fields that contain commas")
    except csv.Error as exc:
        hint = (" (a quote opened here is never closed)" if "end of data" in str(exc) else "")
        raise DataError(f"malformed CSV ({exc}){hint}", file=path, record=f"line {started}",
                        fix="quote fields that contain commas or newlines, and close every quote") from None
    return rows


def check_same_ids(predictions: dict[str, Any], references: dict[str, Any], *, pred_file: object = "predictions",
                   ref_file: object = "references") -> None:
    """Raise a DataError listing the ids that differ between predictions and references."""
    missing = sorted(set(references) - set(predictions))
    extra = sorted(set(predictions) - set(references))
    if not missing and not extra:
        return
    lines = []
    if missing:
        lines.append(f"{len(missing)} reference ids have no prediction: {_preview(missing)}")
    if extra:
        lines.append(f"{len(extra)} predicted ids are not in the references: {_preview(extra)}")
    raise DataError("ids do not match (" + "; ".join(lines) + ")", file=f"{pred_file} vs {ref_file}",
                    fix="score the same study ids on both sides (filter the references, or finish the run)")


def _preview(ids: list[str], n: int = 8) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f", ... (+{len(ids) - n} more)" if len(ids) > n else "")
