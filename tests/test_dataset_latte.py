"""The `latte_cxr` adapter on a small fixture in LATTE-CXR's format, joined to MIMIC-CXR-JPG."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from boxmed_eval.datasets import DATASETS, get_dataset
from boxmed_eval.datasets.latte_cxr import LATTE_COLUMNS, LatteCXR
from boxmed_eval.datasets.mimic_cxr import mimic_image_relpath
from boxmed_eval.errors import DataError

# dicom_id -> (subject_id, study_id, MIMIC split)
IMAGES = {
    "aaa-111": ("16116913", "50778228", "train"),
    "bbb-222": ("14841168", "54393658", "test"),
    "ccc-333": ("10046166", "57379357", "test"),
}

BOX_ROWS = [
    # reading_id, dicom_id, xmin, ymin, xmax, ymax, certainty, chosen, statement, Atelectasis, Pleural abnormality, split
    ("P204R1", "bbb-222", 100, 200, 300, 400, 5, "True", "Left basilar atelectasis", "True", "False", "test"),
    ("P204R1", "bbb-222", 500, 210, 700, 420, 3, "False", "Small left pleural effusion.", "False", "True", "test"),
    ("P204R2", "bbb-222", 110, 190, 310, 390, 4, "True", "Left basilar atelectasis", "True", "False", "test"),
    ("P300R9", "ccc-333", 50.5, 60, 70.5, 80, 2, "True", "Possible  nodule\u00a0right apex", "False", "False", "test"),
    ("P201R7", "aaa-111", 1, 2, 3, 4, 5, "True", "Train statement", "True", "False", "train"),
]
COLUMNS = ["reading_id", "dicom_id", "xmin", "ymin", "xmax", "ymax", "certainty", "chosen", "statement",
           "Atelectasis", "Pleural abnormality", "split"]


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=100).save(path, format="JPEG")


def write_fixture(root: Path, *, split_csv: bool = True, drop: tuple[str, ...] = ()) -> Path:
    for dicom, (subject, study, _) in IMAGES.items():
        _jpeg(root / mimic_image_relpath(subject, study, dicom))
    if split_csv:
        pd.DataFrame([{"dicom_id": d, "study_id": st, "subject_id": su, "split": sp}
                      for d, (su, st, sp) in IMAGES.items()]).to_csv(
            root / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip")
    latte = root / "latte-cxr"
    latte.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(BOX_ROWS, columns=COLUMNS).drop(columns=list(drop))
    frame.to_csv(latte / "bbox_statement.csv", index=False)
    return root


def write_metadata(folder: Path) -> Path:
    """LATTE's per-reading metadata, as in the public id lists derived from it."""
    rows = []
    for reading, dicom in {r[0]: r[1] for r in BOX_ROWS}.items():
        subject, study, split = IMAGES[dicom]
        rows.append({"reading_id": reading, "split": split, "REFLACX_split": split,
                     "image_path": f"physionet.org/files/mimic-cxr/2.0.0/files/p{subject[:2]}/p{subject}/s{study}/{dicom}.dcm",
                     "dicom_id": dicom, "subject_id": subject, "image_size_x": 2544, "image_size_y": 3056,
                     "has_annotated_abnormality": True, "has_paired_bbox_statement": True})
    path = folder / "metadata.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_one_study_per_image_with_statement_boxes(tmp_path: Path) -> None:
    root = write_fixture(tmp_path)
    studies = get_dataset("latte_cxr", root).load("test")
    by_id = {s.id: s for s in studies}
    assert sorted(by_id) == ["bbb-222", "ccc-333"]
    study = by_id["bbb-222"]
    assert study.image_paths == [str((root / mimic_image_relpath("14841168", "54393658", "bbb-222")).resolve())]
    assert [(b.x1, b.y1, b.x2, b.y2) for b in study.boxes] == [(100, 200, 300, 400), (500, 210, 700, 420),
                                                               (110, 190, 310, 390)]
    assert [b.phrase for b in study.boxes] == ["Left basilar atelectasis", "Small left pleural effusion.",
                                               "Left basilar atelectasis"]
    assert [b.category for b in study.boxes] == ["Atelectasis", "Pleural abnormality", "Atelectasis"]
    # distinct statements, in order, each ending with a full stop
    assert study.findings == "Left basilar atelectasis. Small left pleural effusion."
    assert study.meta["reading_ids"] == ["P204R1", "P204R2"]
    assert study.meta["study_id"] == "54393658" and study.meta["subject_id"] == "14841168"
    assert by_id["ccc-333"].findings == "Possible nodule right apex."
    assert by_id["ccc-333"].boxes[0].x1 == 50.5
    assert [s.id for s in get_dataset("latte_cxr", root).load("train")] == ["aaa-111"]


def test_group_by_reading_and_filters(tmp_path: Path) -> None:
    root = write_fixture(tmp_path)
    per_reading = get_dataset("latte_cxr", root, group_by="reading").load("test")
    assert {s.id: len(s.boxes) for s in per_reading} == {"P204R1": 2, "P204R2": 1, "P300R9": 1}
    certain = get_dataset("latte_cxr", root, min_certainty=4).load("test")
    assert {s.id: len(s.boxes) for s in certain} == {"bbb-222": 2}
    chosen = get_dataset("latte_cxr", root, chosen_only="true").load("test")
    assert {s.id: [b.phrase for b in s.boxes] for s in chosen}["bbb-222"] == ["Left basilar atelectasis"] * 2


def test_locations_from_metadata_without_mimic_split_csv(tmp_path: Path) -> None:
    root = write_fixture(tmp_path, split_csv=False, drop=("split",))  # split and locations from metadata
    with pytest.raises(DataError, match="cannot locate the MIMIC-CXR image") as info:
        get_dataset("latte_cxr", root).load("test")
    assert "bbox_statement.csv" in str(info.value)
    write_metadata(root / "latte-cxr")  # auto-detected next to the box CSV
    studies = get_dataset("latte_cxr", root).load("test")
    assert {s.id: s.meta["study_id"] for s in studies} == {"bbb-222": "54393658", "ccc-333": "57379357"}
    assert studies[0].boxes[0].image_width == 2544 and studies[0].boxes[0].image_height == 3056


def test_split_from_mimic_when_latte_has_none_and_mismatch_logged(tmp_path: Path, caplog) -> None:
    root = write_fixture(tmp_path, drop=("split",))
    assert sorted(s.id for s in get_dataset("latte_cxr", root).load("test")) == ["bbb-222", "ccc-333"]
    # LATTE says ccc-333 is train, MIMIC says test: LATTE's split by default, MIMIC's on request
    frame = pd.read_csv(root / "latte-cxr" / "bbox_statement.csv")
    frame["split"] = ["test", "test", "test", "train", "train"]
    frame.to_csv(root / "latte-cxr" / "bbox_statement.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="boxmed_eval"):
        assert [s.id for s in get_dataset("latte_cxr", root).load("test")] == ["bbb-222"]
    assert "1 images have a LATTE split different from MIMIC-CXR's" in caplog.text
    assert sorted(s.id for s in get_dataset("latte_cxr", root, split_from="mimic").load("test")) == [
        "bbb-222", "ccc-333"]


def test_findings_from_mimic_reports(tmp_path: Path) -> None:
    root = write_fixture(tmp_path)
    pd.DataFrame([{"study": "s54393658", "findings": "Report findings\ntext.", "impression": "x"},
                  {"study": "s57379357", "findings": "", "impression": "y"}]).to_csv(
        root / "mimic_cxr_sectioned.csv", index=False)
    adapter = get_dataset("latte_cxr", root, reports="auto")
    studies = adapter.load("test")
    assert [(s.id, s.findings) for s in studies] == [("bbb-222", "Report findings text.")]
    assert len(studies[0].boxes) == 3
    assert adapter.dropped_empty == 1  # ccc-333: empty findings section


def test_csv_option_and_bad_input(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "mimic")
    moved = tmp_path / "latte.csv"
    (root / "latte-cxr" / "bbox_statement.csv").rename(moved)
    with pytest.raises(DataError, match="bbox_statement.csv not found"):
        get_dataset("latte_cxr", root).load("test")
    assert len(get_dataset("latte_cxr", root, csv=str(moved)).load("test")) == 2
    # a missing column names the roles and the accepted names
    pd.read_csv(moved).drop(columns=["statement"]).to_csv(moved, index=False)
    with pytest.raises(DataError, match="statement: one of statement") as info:
        get_dataset("latte_cxr", root, csv=str(moved)).load("test")
    assert "latte.csv" in str(info.value)
    # a non-numeric / inverted box names the row
    frame = pd.DataFrame(BOX_ROWS, columns=COLUMNS).astype(str)
    frame.loc[1, "xmax"] = "wide"
    frame.to_csv(moved, index=False)
    with pytest.raises(DataError, match="xmax='wide' is not a number") as info:
        get_dataset("latte_cxr", root, csv=str(moved)).load("test")
    assert "row 3" in str(info.value)
    frame.loc[1, "xmax"] = "10"
    frame.to_csv(moved, index=False)
    with pytest.raises(DataError, match="x2<x1"):
        get_dataset("latte_cxr", root, csv=str(moved)).load("test")
    # a dicom_id MIMIC does not know
    frame = pd.DataFrame(BOX_ROWS, columns=COLUMNS)
    frame.loc[0, "dicom_id"] = "zzz-999"
    frame.to_csv(moved, index=False)
    with pytest.raises(DataError, match="dicom_id zzz-999 is not in MIMIC-CXR-JPG"):
        get_dataset("latte_cxr", root, csv=str(moved)).load("test")
    # malformed CSV
    moved.write_text('reading_id,dicom_id,statement\n"P1,bbb-222,text\n')
    with pytest.raises(DataError, match="malformed LATTE-CXR box-statement CSV") as info:
        get_dataset("latte_cxr", root, csv=str(moved)).load("test")
    assert "latte.csv" in str(info.value)


def test_refuses_ids_that_would_escape(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "root", split_csv=False)
    write_metadata(root / "latte-cxr")
    frame = pd.read_csv(root / "latte-cxr" / "bbox_statement.csv", dtype=str)
    frame.loc[3, "dicom_id"] = "../../../../etc/passwd"  # reading P300R9: located through the metadata
    frame.to_csv(root / "latte-cxr" / "bbox_statement.csv", index=False)
    with pytest.raises(DataError, match="dicom_id '../../../../etc/passwd' is not a valid MIMIC-CXR id") as info:
        get_dataset("latte_cxr", root, check_images=False).load("test")
    assert "bbox_statement.csv" in str(info.value) and "row 5" in str(info.value)


def test_missing_image(tmp_path: Path) -> None:
    root = write_fixture(tmp_path)
    (root / mimic_image_relpath("10046166", "57379357", "ccc-333")).unlink()
    with pytest.raises(DataError, match="image file not found"):
        get_dataset("latte_cxr", root).load("test")
    assert len(get_dataset("latte_cxr", root, check_images=False).load("test")) == 2


def test_registered_and_documented() -> None:
    assert DATASETS.get("latte_cxr") is LatteCXR
    assert LatteCXR.credentialed and LatteCXR.env_var == "BOXMED_MIMIC_ROOT"
    assert LATTE_COLUMNS["statement"][0] == "statement" and LATTE_COLUMNS["x1"][0] == "xmin"
