"""LATTE-CXR 1.0.0 (PhysioNet, derived from REFLACX): bounding box - statement pairs.

``bbox_statement.csv`` pairs each radiologist-drawn box (REFLACX ellipses turned into
rectangles, in pixels of the original MIMIC-CXR image) with the report statement describing
it, plus the radiologist's ``certainty`` (1-5), a ``chosen`` flag and REFLACX's pathology
columns. Images come from MIMIC-CXR-JPG: the data root (or ``BOXMED_MIMIC_ROOT``) is the
MIMIC-CXR-JPG folder, ``csv=PATH`` the box-statement CSV (default: ``bbox_statement.csv`` in
the data root or in a ``latte-cxr``/``LATTE-CXR`` folder inside it).

One ``Study`` per image (``dicom_id``) with one ``Box`` per row (``Box.phrase`` = the
statement, ``Box.category`` = the pathology columns marked true); ``group_by=reading`` makes
one study per REFLACX reading instead (several radiologists read some images). The findings
are the distinct statements joined in order, unless ``reports=PATH`` (or ``reports=auto``)
names a MIMIC-CXR report source, whose findings section is then used.

Where each image lives (``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``) comes from ``subject_id`` /
``study_id`` columns when the CSV has them, else from a LATTE metadata CSV (``metadata=PATH``,
default ``metadata*.csv`` next to the box CSV: ``reading_id``, ``dicom_id``, ``subject_id``,
``image_path`` to the MIMIC DICOM, ``split``, ``image_size_x``/``image_size_y``), else from
MIMIC-CXR-JPG's split CSV in the data root. The split is LATTE's own ``split`` column when there
is one (``split_from=mimic`` uses MIMIC's official split instead; mismatches are logged).

Column names: the published release could not be checked here (it is credentialed). The
mapping below follows REFLACX's files (``xmin``..``ymax``, ``certainty``, ``reading_id``/``id``,
``image_size_x``) and descriptions of LATTE-CXR (``statement``, ``chosen``, ``split``,
``REFLACX_split``); each role lists the names it accepts, first match wins. Adjust
``LATTE_COLUMNS`` if a release differs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from boxmed_eval.datasets.base import DATASETS, DatasetAdapter, canonical_split
from boxmed_eval.datasets.mimic_cxr import (
    SPLIT_TABLE, MimicReports, check_mimic_ids, find_table, mimic_image_relpath, normalize_mimic_id,
    read_table,
)
from boxmed_eval.errors import DataError
from boxmed_eval.records import Box, Study
from boxmed_eval.text import normalize_text

log = logging.getLogger(__name__)

LATTE_URL = "https://physionet.org/content/latte-cxr/1.0.0/ (PhysioNet access)"

LATTE_COLUMNS: dict[str, tuple[str, ...]] = {
    # role: accepted column names, first match wins
    "dicom_id": ("dicom_id", "dicom"),
    "statement": ("statement", "statements", "sentence", "text"),
    "x1": ("xmin", "x_min", "x1"),
    "y1": ("ymin", "y_min", "y1"),
    "x2": ("xmax", "x_max", "x2"),
    "y2": ("ymax", "y_max", "y2"),
    "reading_id": ("reading_id", "id", "reflacx_id"),
    "certainty": ("certainty",),
    "chosen": ("chosen",),
    "split": ("split",),
    "subject_id": ("subject_id",),
    "study_id": ("study_id",),
    "image_path": ("image_path", "image"),
    "image_width": ("image_size_x", "image_width", "width"),
    "image_height": ("image_size_y", "image_height", "height"),
}
"""Column roles of LATTE-CXR's CSVs -> the column names accepted for each."""

REQUIRED_ROLES = ("dicom_id", "statement", "x1", "y1", "x2", "y2")

REFLACX_LABELS: tuple[str, ...] = (
    "Abnormal mediastinal contour", "Acute fracture", "Atelectasis", "Consolidation",
    "Enlarged cardiac silhouette", "Enlarged hilum", "Groundglass opacity", "Hiatal hernia",
    "High lung volume / emphysema", "Interstitial lung disease", "Lung nodule or mass",
    "Pleural abnormality", "Pneumothorax", "Pulmonary edema", "Support devices", "Other",
    # names of REFLACX phase 1-2 that LATTE may carry
    "Wide mediastinum", "Fracture", "Emphysema", "Mass", "Nodule", "Pleural effusion",
    "Pleural thickening", "Fibrosis", "Quality issue",
)
"""REFLACX pathology columns; those marked true on a row become the box's category."""

_TRUE = {"true", "1", "1.0", "yes", "t", "y"}


def _label_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_LABEL_KEYS = {_label_key(name): name for name in REFLACX_LABELS}


def resolve_columns(frame: pd.DataFrame, required: tuple[str, ...], *, file: Path) -> dict[str, str]:
    """``{role: column}`` for the roles of ``LATTE_COLUMNS`` found in ``frame`` (case-insensitive)."""
    by_lower = {c.lower(): c for c in frame.columns}
    found: dict[str, str] = {}
    for role, names in LATTE_COLUMNS.items():
        for name in names:
            if name.lower() in by_lower:
                found[role] = by_lower[name.lower()]
                break
    missing = [role for role in required if role not in found]
    if missing:
        wanted = "; ".join(f"{role}: one of {', '.join(LATTE_COLUMNS[role])}" for role in missing)
        raise DataError(f"missing columns ({wanted}); has {list(frame.columns)[:20]}", file=file,
                        fix="use LATTE-CXR's bbox_statement.csv, or extend LATTE_COLUMNS in "
                            "boxmed_eval/datasets/latte_cxr.py if your release names the columns differently")
    return found


def _ids_from_mimic_path(path: str) -> tuple[str, str] | None:
    """(subject_id, study_id) from '.../files/p16/p16116913/s50778228/xxx.dcm'."""
    match = re.search(r"/p\d{2}/p(\d+)/s(\d+)/", "/" + str(path).replace("\\", "/"))
    return (match.group(1), match.group(2)) if match else None


def _number(value: str, *, file: Path, record: str, column: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{column}={value!r} is not a number", file=file, record=record,
                        fix="box coordinates must be numbers (pixels of the original image)") from None


@DATASETS.register("latte_cxr")
class LatteCXR(DatasetAdapter):
    description = ("LATTE-CXR 1.0.0 (from REFLACX): radiologist box - report statement pairs on MIMIC-CXR "
                   "images; one study per image, findings = its statements")
    needs = ("--data-root (or BOXMED_MIMIC_ROOT) = MIMIC-CXR-JPG (files/, and its split CSV unless the LATTE "
             "CSVs give subject/study ids); LATTE-CXR bbox_statement.csv (PhysioNet) in the root or csv=PATH; "
             "options: metadata=PATH, reports=PATH|auto, group_by=image|reading, min_certainty=N, "
             "chosen_only=true, split_from=latte|mimic")
    env_var = "BOXMED_MIMIC_ROOT"
    credentialed = True
    report_words = 200  # MIMIC-CXR images and reports

    def _box_csv(self) -> Path:
        explicit = self.options.get("csv")
        if explicit:
            path = Path(explicit).expanduser()
            path = path if path.is_absolute() else self.data_root / path
            if not path.is_file():
                raise DataError("LATTE-CXR box-statement CSV not found", file=path,
                                fix=f"pass csv=PATH to bbox_statement.csv from LATTE-CXR ({LATTE_URL})")
            return path
        for folder in (self.data_root, self.data_root / "latte-cxr", self.data_root / "LATTE-CXR",
                       self.data_root / "latte-cxr" / "1.0.0"):
            candidate = folder / "bbox_statement.csv"
            if candidate.is_file():
                return candidate
        raise DataError("LATTE-CXR bbox_statement.csv not found in the data root or its latte-cxr/ folder",
                        file=self.data_root, fix=f"pass csv=PATH (download LATTE-CXR from {LATTE_URL})")

    def _metadata(self, box_csv: Path) -> pd.DataFrame | None:
        """LATTE's per-reading metadata (dicom_id, subject_id, image_path, split, sizes), if any."""
        explicit = self.options.get("metadata")
        if explicit:
            paths = [Path(p.strip()).expanduser() for p in str(explicit).split(",") if p.strip()]
            paths = [p if p.is_absolute() else self.data_root / p for p in paths]
        else:
            paths = sorted(box_csv.parent.glob("metadata*.csv"))
        if not paths:
            return None
        frames = []
        for path in paths:
            frame = read_table(path, (), what="LATTE-CXR metadata CSV")
            columns = resolve_columns(frame, ("dicom_id",), file=path)
            keep = {role: frame[column].astype(str).str.strip() for role, column in columns.items()
                    if role in ("dicom_id", "reading_id", "subject_id", "study_id", "image_path", "split",
                                "image_width", "image_height")}
            frames.append(pd.DataFrame(keep))
        return pd.concat(frames, ignore_index=True)

    def load(self, split: str = "test") -> list[Study]:
        split = self.check_split(split)
        box_csv = self._box_csv()
        frame = read_table(box_csv, (), what="LATTE-CXR box-statement CSV",
                           fix=f"use bbox_statement.csv from LATTE-CXR ({LATTE_URL})")
        columns = resolve_columns(frame, REQUIRED_ROLES, file=box_csv)
        table = pd.DataFrame({role: frame[column].astype(str).str.strip() for role, column in columns.items()})
        table["row"] = range(2, len(frame) + 2)  # CSV line numbers for error messages
        label_columns = {c: _LABEL_KEYS[_label_key(c)] for c in frame.columns if _label_key(c) in _LABEL_KEYS}
        marked = {name: frame[c].astype(str).str.strip().str.lower().isin(_TRUE) for c, name in label_columns.items()}
        table["category"] = [", ".join(name for name, flags in marked.items() if flags.iloc[i])
                             for i in range(len(frame))] if marked else ""

        table = self._attach_locations(table, box_csv)
        table = self._attach_split(table, box_csv)
        table = table[table["split"] == split]
        table = self._filter(table)

        reports = self._reports()
        group_by = str(self.options.get("group_by", "image")).strip().lower()
        if group_by not in ("image", "reading"):
            raise DataError(f"group_by={group_by!r}", fix="use group_by=image or group_by=reading")
        if group_by == "reading" and "reading_id" not in table.columns:
            raise DataError("group_by=reading needs a reading_id (or id) column", file=box_csv)
        key_column = "dicom_id" if group_by == "image" else "reading_id"

        studies: list[Study] = []
        for key, rows in table.groupby(key_column, sort=False):
            first = rows.iloc[0]
            record = f"row {first['row']} (dicom_id {first['dicom_id']})"
            subject_id, study_id = first.get("subject_id", ""), first.get("study_id", "")
            image = self.image_path(mimic_image_relpath(subject_id, study_id, first["dicom_id"]), file=box_csv,
                                    record=record)
            width, height = _size(first.get("image_width")), _size(first.get("image_height"))
            boxes, statements = [], []
            for _, row in rows.iterrows():
                where = f"row {row['row']} (dicom_id {row['dicom_id']})"
                coords = [_number(row[c], file=box_csv, record=where, column=columns[c])
                          for c in ("x1", "y1", "x2", "y2")]
                statement = normalize_text(row["statement"])
                try:
                    boxes.append(Box(*coords, phrase=statement, category=row["category"], image_width=width,
                                     image_height=height))
                except ValueError as exc:
                    raise DataError(str(exc), file=box_csv, record=where,
                                    fix="xmin <= xmax and ymin <= ymax, in pixels") from None
                if statement and statement not in statements:
                    statements.append(statement)
            if reports is not None:
                findings = reports.findings(subject_id, study_id) or ""
            else:
                findings = " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in statements)
            meta: dict[str, Any] = {"source": "latte_cxr", "dicom_id": first["dicom_id"], "subject_id": subject_id,
                                    "study_id": study_id}
            if "reading_id" in rows.columns:
                meta["reading_ids"] = sorted(set(rows["reading_id"]) - {""})
            if "certainty" in rows.columns:
                meta["certainty"] = [c for c in rows["certainty"]]
            studies.append(Study(id=str(key), image_paths=[image], findings=findings, split=split, boxes=boxes,
                                 meta=meta))
        return self.finish(studies, split, source=box_csv)

    # -- joins ------------------------------------------------------------------------

    def _attach_locations(self, table: pd.DataFrame, box_csv: Path) -> pd.DataFrame:
        """Add subject_id / study_id (and LATTE split, image sizes) from LATTE's metadata CSV, and
        MIMIC's official split (``m_split``) plus any still-missing ids from MIMIC's split CSV."""
        metadata = self._metadata(box_csv)
        if metadata is not None:
            if "image_path" in metadata:  # '.../files/p16/p16116913/s50778228/<dicom>.dcm'
                parsed = metadata["image_path"].map(lambda p: _ids_from_mimic_path(p) or ("", ""))
                for column, position in (("subject_id", 0), ("study_id", 1)):
                    from_path = parsed.map(lambda ids, i=position: ids[i])
                    metadata[column] = (metadata[column].where(metadata[column] != "", from_path)
                                        if column in metadata else from_path)
            on = "reading_id" if "reading_id" in table and "reading_id" in metadata else "dicom_id"
            extra = [c for c in ("subject_id", "study_id", "split", "image_width", "image_height") if c in metadata]
            table = table.merge(metadata[[on, *extra]].drop_duplicates(on), on=on, how="left",
                                suffixes=("", "_meta"))
            for column in extra:  # the box CSV's own values win; metadata fills what it leaves blank
                if f"{column}_meta" in table:
                    own = table[column].fillna("").astype(str)
                    table[column] = own.where(own != "", table.pop(f"{column}_meta").fillna(""))
        for column in ("subject_id", "study_id"):
            values = table[column].fillna("").astype(str) if column in table else pd.Series("", index=table.index)
            table[column] = values.map(lambda v: normalize_mimic_id(v) if v.strip() else "")

        split_csv = find_table(self.data_root, SPLIT_TABLE)
        if split_csv is not None:
            mimic = read_table(split_csv, ("dicom_id", "study_id", "subject_id", "split"),
                               what="MIMIC-CXR-JPG split CSV").drop_duplicates("dicom_id")
            mimic = mimic.rename(columns={"subject_id": "m_subject_id", "study_id": "m_study_id", "split": "m_split"})
            table = table.merge(mimic[["dicom_id", "m_subject_id", "m_study_id", "m_split"]], on="dicom_id", how="left")
            for column in ("subject_id", "study_id"):
                from_mimic = table[f"m_{column}"].fillna("").astype(str).map(
                    lambda v: normalize_mimic_id(v) if v.strip() else "")
                table[column] = table[column].where(table[column] != "", from_mimic)
            table["m_split"] = table["m_split"].fillna("")
        located = table[(table["subject_id"] != "") & (table["study_id"] != "")]
        check_mimic_ids(located, file=box_csv, record_column="row")
        unlocated = table[(table["subject_id"] == "") | (table["study_id"] == "")]
        if len(unlocated):
            first = unlocated.iloc[0]
            if split_csv is None:
                raise DataError(
                    "cannot locate the MIMIC-CXR image of this box: no subject_id/study_id in the LATTE CSVs and "
                    f"no {SPLIT_TABLE}.csv(.gz) in the data root", file=box_csv,
                    record=f"row {first['row']} (dicom_id {first['dicom_id']})",
                    fix="point --data-root at MIMIC-CXR-JPG 2.x (with its split CSV), or pass metadata=PATH to "
                        "LATTE-CXR's metadata CSV")
            raise DataError(f"dicom_id {first['dicom_id']} is not in MIMIC-CXR-JPG ({len(unlocated)} rows like it)",
                            file=box_csv, record=f"row {first['row']}",
                            fix=f"check the data root is MIMIC-CXR-JPG 2.x and {split_csv.name} is complete")
        return table

    def _attach_split(self, table: pd.DataFrame, box_csv: Path) -> pd.DataFrame:
        split_from = str(self.options.get("split_from", "latte")).strip().lower()
        if split_from not in ("latte", "mimic"):
            raise DataError(f"split_from={split_from!r}", fix="use split_from=latte or split_from=mimic")
        has_latte = "split" in table and bool((table["split"].fillna("") != "").any())
        has_mimic = "m_split" in table
        if split_from == "mimic" or not has_latte:
            if not has_mimic:
                raise DataError("no split: the LATTE CSVs have no split column and MIMIC's split CSV is missing",
                                file=box_csv, fix=f"put {SPLIT_TABLE}.csv.gz in the data root")
            table["split"] = table["m_split"]
        elif has_mimic:
            latte = table["split"].fillna("").map(canonical_split)
            mimic = table["m_split"].fillna("").map(canonical_split)
            mismatched = table.loc[(latte != mimic) & (mimic != ""), "dicom_id"].nunique()
            if mismatched:
                log.warning("latte_cxr: %d images have a LATTE split different from MIMIC-CXR's official split "
                            "(split_from=mimic uses MIMIC's)", mismatched)
            table["split"] = latte.where(latte != "", mimic)  # rows LATTE leaves blank take MIMIC's
        table["split"] = table["split"].fillna("").map(canonical_split)
        return table

    def _filter(self, table: pd.DataFrame) -> pd.DataFrame:
        min_certainty = self.options.get("min_certainty")
        if min_certainty not in (None, ""):
            if "certainty" not in table:
                raise DataError("min_certainty needs a certainty column in the LATTE-CXR CSV")
            certainty = pd.to_numeric(table["certainty"], errors="coerce")
            table = table[certainty >= float(min_certainty)]
        if str(self.options.get("chosen_only", "")).strip().lower() in _TRUE:
            if "chosen" not in table:
                raise DataError("chosen_only needs a chosen column in the LATTE-CXR CSV")
            table = table[table["chosen"].str.lower().isin(_TRUE)]
        return table

    def _reports(self) -> MimicReports | None:
        source = self.options.get("reports")
        if not source:
            return None
        if str(source).strip().lower() == "auto":
            found = MimicReports.locate(self.data_root, None)
            if found is None:
                raise DataError("reports=auto: no MIMIC-CXR reports under the data root", file=self.data_root,
                                fix="pass reports=PATH to mimic_cxr_sectioned.csv or the mimic-cxr-reports folder")
            return found
        return MimicReports.locate(self.data_root, source)


def _size(value: object) -> int | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return int(number) if number > 0 else None
