"""The `mimic` adapter on small fixtures written in both MIMIC-CXR layouts."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from boxmed_eval.datasets import DATASETS, get_dataset
from boxmed_eval.datasets.mimic_cxr import MimicCXR, mimic_image_relpath
from boxmed_eval.errors import DataError, MissingResourceError
from boxmed_eval.records import CHEXPERT_CLASSES


def _jpeg(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=shade).save(path, format="JPEG")


def _gz_csv(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, compression="gzip")


# Studies of the JPG fixture: subject, study, split, [(dicom, view)], report text
JPG_STUDIES = [
    ("10000032", "50414267", "test", [("d-b-lat", "LATERAL"), ("d-c-ap", "AP"), ("d-d-pa", "PA")],
     "FINAL REPORT\n EXAMINATION: CHEST PA AND LAT\n\n FINDINGS: \n The lungs are clear.\n No  effusion.\n\n"
     " IMPRESSION: \n No acute process.\n"),
    ("10000032", "53189527", "test", [("e-b-ap", "AP"), ("e-a-ap", "AP")],
     "FINDINGS:\n Heart size is normal. Small left pleural effusion.\nIMPRESSION:\n Effusion.\n"),
    ("10000898", "50771383", "test", [("f-a-lat", "LATERAL"), ("f-b-ll", "LL")],
     "FINDINGS:\n Lateral only study.\n"),
    ("10000935", "51178377", "test", [("g-a-pa", "PA")],
     "IMPRESSION:\n No findings section here.\n"),  # empty findings -> dropped and counted
    ("10001884", "55000000", "validate", [("h-a-pa", "PA")], "FINDINGS:\n Validation study.\n"),
    ("10001884", "56000000", "train", [("i-a-pa", "PA")], "FINDINGS:\n Training study.\n"),
]


def _labels_frame() -> pd.DataFrame:
    rows = []
    for subject, study, *_ in JPG_STUDIES:
        row = {"subject_id": subject, "study_id": study}
        row.update({c: "" for c in CHEXPERT_CLASSES})
        rows.append(row)
    rows[0]["No Finding"] = "1.0"
    rows[1]["Pleural Effusion"] = "1.0"
    rows[1]["Cardiomegaly"] = "0.0"
    rows[1]["Edema"] = "-1.0"
    return pd.DataFrame(rows)


def write_jpg_layout(root: Path, *, reports: str = "sectioned", labels: bool = True, images: bool = True) -> Path:
    split_rows, meta_rows, section_rows = [], [], []
    for subject, study, split, dicoms, report in JPG_STUDIES:
        for dicom, view in dicoms:
            split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                              "PerformedProcedureStepDescription": "CHEST", "ViewPosition": view,
                              "Rows": 8, "Columns": 8})
            if images:
                _jpeg(root / mimic_image_relpath(subject, study, dicom))
        if reports == "txt":
            txt = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(report, encoding="utf-8")
        findings = report.split("FINDINGS:")[1].split("IMPRESSION:")[0] if "FINDINGS:" in report else ""
        section_rows.append({"study": f"s{study}", "impression": "imp", "findings": findings,
                             "last_paragraph": "", "comparison": ""})
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", pd.DataFrame(split_rows))
    _gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame(meta_rows))
    if labels:
        _gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", _labels_frame())
    if reports == "sectioned":
        pd.DataFrame(section_rows).to_csv(root / "mimic_cxr_sectioned.csv", index=False)
    return root


def write_r2gen_layout(root: Path) -> Path:
    def entry(i: int, split: str, report: str) -> dict:
        paths = [f"p10/p1000{i}/s5000{i}/img{i}a.jpg", f"p10/p1000{i}/s5000{i}/img{i}b.jpg"]
        _jpeg(root / "images" / paths[0])  # only the first exists: R2Gen's MIMIC loader reads only it
        return {"id": f"img{i}a", "study_id": 50000 + i, "subject_id": 10000 + i, "report": report,
                "image_path": paths, "split": split}
    data = {"train": [entry(1, "train", "Train report.")],
            "val": [entry(2, "val", "Val report.")],
            "test": [entry(3, "test", "The heart is normal.\nLungs\u00a0clear."), entry(4, "test", "   ")]}
    (root / "annotation.json").write_text(json.dumps(data), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------- JPG layout


def test_jpg_layout_sectioned_reports_view_preference_and_labels(tmp_path: Path, caplog) -> None:
    root = write_jpg_layout(tmp_path)
    adapter = get_dataset("mimic", root)
    assert adapter.layout == "jpg"
    with caplog.at_level(logging.INFO, logger="boxmed_eval"):
        studies = adapter.load("test")
    by_id = {s.id: s for s in studies}
    # 4 test studies: one lateral-only (skipped, counted), one with empty findings (dropped, counted)
    assert sorted(by_id) == ["50414267", "53189527"]
    assert adapter.skipped_no_view == 1
    assert adapter.dropped_empty == 1
    assert "skipped 1 of 4 studies with no PA/AP image" in caplog.text
    assert "dropped 1 studies with empty findings" in caplog.text
    # PA preferred over AP and lateral
    first = by_id["50414267"]
    assert first.image_paths == [str((root / mimic_image_relpath("10000032", "50414267", "d-d-pa")).resolve())]
    assert first.meta["view"] == "PA" and first.meta["dicom_id"] == "d-d-pa"
    assert first.findings == "The lungs are clear. No effusion."
    # two AP images: tie broken by dicom_id order
    assert by_id["53189527"].meta["dicom_id"] == "e-a-ap"
    assert by_id["53189527"].labels["Pleural Effusion"] == 1
    assert by_id["53189527"].labels["Cardiomegaly"] == 0
    assert by_id["53189527"].labels["Edema"] == -1
    assert by_id["53189527"].labels["Lung Opacity"] is None
    assert first.labels["No Finding"] == 1
    assert first.meta["subject_id"] == "10000032"


def test_jpg_layout_views_option_and_split_names(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path)
    ap_first = get_dataset("mimic", root, views="AP,PA").load("test")
    assert {s.id: s.meta["dicom_id"] for s in ap_first}["50414267"] == "d-c-ap"
    lateral = get_dataset("mimic", root, views=["LATERAL", "LL"]).load("test")
    assert {s.id: s.meta["dicom_id"] for s in lateral} == {"50414267": "d-b-lat", "50771383": "f-a-lat"}
    # MIMIC's 'validate' is the canonical 'val'
    val = get_dataset("mimic", root).load("validate")
    assert [s.id for s in val] == ["55000000"] and val[0].split == "val"
    assert [s.id for s in get_dataset("mimic", root).load("train")] == ["56000000"]


def test_jpg_layout_report_txt_files(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path, reports="txt", labels=False)
    adapter = get_dataset("mimic", root)
    studies = adapter.load("test")
    by_id = {s.id: s for s in studies}
    assert sorted(by_id) == ["50414267", "53189527"]
    assert by_id["50414267"].findings == "The lungs are clear. No effusion."
    assert by_id["53189527"].findings == "Heart size is normal. Small left pleural effusion."
    assert by_id["50414267"].labels is None
    assert by_id["50414267"].meta["report_source"] == "report_txt"
    assert adapter.dropped_empty == 1
    # the reports unzipped into their own folder (auto-detected), or reports=PATH to its files/
    for txt in sorted((root / "files").rglob("s*.txt")):
        target = root / "mimic-cxr-reports" / txt.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        txt.rename(target)
    assert sorted(s.id for s in get_dataset("mimic", root).load("test")) == ["50414267", "53189527"]
    files_dir = root / "mimic-cxr-reports" / "files"
    assert len(get_dataset("mimic", root, reports=str(files_dir)).load("test")) == 2


def test_jpg_layout_reports_option_points_elsewhere(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path / "mimic", reports="none")
    with pytest.raises(DataError, match="no MIMIC-CXR reports found"):
        get_dataset("mimic", root).load("test")
    sectioned = tmp_path / "elsewhere" / "sections.csv.gz"
    sectioned.parent.mkdir()
    pd.DataFrame([{"study": "s50414267", "findings": "Clear.", "impression": ""}]).to_csv(
        sectioned, index=False, compression="gzip")
    adapter = get_dataset("mimic", root, reports=str(sectioned))
    studies = adapter.load("test")
    assert [(s.id, s.findings) for s in studies] == [("50414267", "Clear.")]
    assert adapter.missing_reports == 2  # studies the sectioned CSV has no row for


def test_jpg_layout_missing_image(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path)
    missing = root / mimic_image_relpath("10000032", "50414267", "d-d-pa")
    missing.unlink()
    with pytest.raises(DataError, match="image file not found") as info:
        get_dataset("mimic", root).load("test")
    assert "d-d-pa" in str(info.value)
    assert len(get_dataset("mimic", root, check_images=False).load("test")) == 2


def test_jpg_layout_refuses_ids_that_would_escape(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path / "root")
    split_csv = root / "mimic-cxr-2.0.0-split.csv.gz"
    frame = pd.read_csv(split_csv, dtype=str)
    frame.loc[frame["dicom_id"] == "d-d-pa", "dicom_id"] = "../../../../etc/passwd"
    _gz_csv(split_csv, frame)
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    meta.loc[meta["dicom_id"] == "d-d-pa", "dicom_id"] = "../../../../etc/passwd"
    _gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    with pytest.raises(DataError, match="dicom_id '../../../../etc/passwd' is not a valid MIMIC-CXR id") as info:
        get_dataset("mimic", root, check_images=False).load("test")
    assert "mimic-cxr-2.0.0-split.csv.gz" in str(info.value)


def test_labels_read_only_for_loaded_studies(tmp_path: Path) -> None:
    from boxmed_eval.datasets.chexpert_labels import read_chexpert_labels

    path = tmp_path / "labels.csv.gz"
    _gz_csv(path, _labels_frame())
    some = read_chexpert_labels(path, keys={"53189527", "nope"})
    assert list(some) == ["53189527"] and some["53189527"]["Edema"] == -1
    assert len(read_chexpert_labels(path)) == len(JPG_STUDIES)
    pair = read_chexpert_labels(path, ("subject_id", "study_id"), keys=["10000032/50414267"])
    assert list(pair) == ["10000032/50414267"] and pair["10000032/50414267"]["No Finding"] == 1


def test_jpg_layout_missing_tables_and_columns(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match="metadata CSV") as info:
        get_dataset("mimic", root).load("test")
    assert "physionet.org/content/mimic-cxr-jpg" in str(info.value)
    _gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame([{"dicom_id": "x", "View": "PA"}]))
    with pytest.raises(DataError, match=r"lacks columns \['ViewPosition'\]") as info:
        get_dataset("mimic", root).load("test")
    assert "mimic-cxr-2.0.0-metadata.csv.gz" in str(info.value)


def test_jpg_layout_malformed_csv_names_file(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path)
    split_csv = root / "mimic-cxr-2.0.0-split.csv.gz"
    split_csv.write_bytes(gzip.compress(b"dicom_id,study_id,subject_id,split\n")[:15])  # truncated download
    with pytest.raises(DataError, match="malformed MIMIC-CXR-JPG split CSV") as info:
        get_dataset("mimic", root).load("test")
    assert str(split_csv) in str(info.value)
    split_csv.write_bytes(gzip.compress(b'dicom_id,study_id,subject_id,split\n"a,1,2,test\n'))  # open quote
    with pytest.raises(DataError, match="malformed") as info:
        get_dataset("mimic", root).load("test")
    assert str(split_csv) in str(info.value)


def test_jpg_layout_bad_label_value(tmp_path: Path) -> None:
    root = write_jpg_layout(tmp_path)
    labels = _labels_frame()
    labels.loc[0, "Edema"] = "maybe"
    _gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels)
    with pytest.raises(DataError, match="'Edema' has value 'maybe'"):
        get_dataset("mimic", root).load("test")


# ---------------------------------------------------------------------------- R2Gen layout


def test_r2gen_layout_first_image_only(tmp_path: Path, caplog) -> None:
    root = write_r2gen_layout(tmp_path)
    adapter = get_dataset("mimic", root)
    assert adapter.layout == "r2gen"
    with caplog.at_level(logging.INFO, logger="boxmed_eval"):
        studies = adapter.load("test")
    assert [s.id for s in studies] == ["img3a"]
    study = studies[0]
    assert study.image_paths == [str((root / "images/p10/p10003/s50003/img3a.jpg").resolve())]
    assert study.findings == "The heart is normal. Lungs clear."
    assert study.meta == {"source": "r2gen_annotation", "study_id": "50003", "subject_id": "10003"}
    assert adapter.dropped_empty == 1 and "dropped 1 studies with empty findings" in caplog.text
    assert [s.id for s in adapter.load("val")] == ["img2a"]


def test_r2gen_layout_refuses_path_escape(tmp_path: Path) -> None:
    root = write_r2gen_layout(tmp_path / "root")
    data = json.loads((root / "annotation.json").read_text())
    data["test"][0]["image_path"] = ["../../etc/passwd"]
    (root / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="escapes the data root") as info:
        get_dataset("mimic", root, check_images=False).load("test")
    assert "annotation.json" in str(info.value)


def test_r2gen_layout_malformed_json_names_file(tmp_path: Path) -> None:
    root = write_r2gen_layout(tmp_path)
    (root / "annotation.json").write_text('{"test": [ {"id": "x", ')
    with pytest.raises(DataError, match="malformed JSON") as info:
        get_dataset("mimic", root).load("test")
    assert "annotation.json" in str(info.value)


def test_r2gen_layout_missing_image(tmp_path: Path) -> None:
    root = write_r2gen_layout(tmp_path)
    (root / "images/p10/p10003/s50003/img3a.jpg").unlink()
    with pytest.raises(DataError, match="image file not found"):
        get_dataset("mimic", root).load("test")


# ---------------------------------------------------------------------------- detection, registry


def test_layout_detection_and_forcing(tmp_path: Path) -> None:
    both = write_r2gen_layout(write_jpg_layout(tmp_path / "both"))
    assert get_dataset("mimic", both).layout == "r2gen"  # R2Gen's split wins when both are there
    assert get_dataset("mimic", both, layout="jpg").layout == "jpg"
    with pytest.raises(DataError, match="unknown MIMIC layout"):
        get_dataset("mimic", both, layout="dicom")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no MIMIC-CXR layout found") as info:
        get_dataset("mimic", empty)
    assert "annotation.json" in str(info.value) and "mimic-cxr-2.0.0-split.csv.gz" in str(info.value)
    with pytest.raises(DataError, match="annotation file not found"):
        get_dataset("mimic", empty, layout="r2gen").load("test")
    with pytest.raises(DataError, match="split CSV not found"):
        get_dataset("mimic", empty, layout="jpg").load("test")


def test_registry_env_var_and_missing_root(tmp_path: Path, monkeypatch) -> None:
    assert DATASETS.get("mimic") is MimicCXR
    assert MimicCXR.credentialed and MimicCXR.env_var == "BOXMED_MIMIC_ROOT"
    root = write_r2gen_layout(tmp_path)
    monkeypatch.setenv("BOXMED_MIMIC_ROOT", str(root))
    assert [s.id for s in get_dataset("mimic").load("test")] == ["img3a"]
    monkeypatch.delenv("BOXMED_MIMIC_ROOT")
    with pytest.raises(MissingResourceError, match="BOXMED_MIMIC_ROOT"):
        get_dataset("mimic")
