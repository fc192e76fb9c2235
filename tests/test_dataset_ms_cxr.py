"""The MS-CXR 1.1.0 adapter on a small fixture in the real CSV layout, with tiny JPEGs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from boxmed_eval.datasets import get_dataset
from boxmed_eval.datasets.ms_cxr import MS_CXR_COLUMNS, MS_CXR_CSV_NAME, phrases_as_findings, read_ms_cxr_csv
from boxmed_eval.errors import DataError, MissingResourceError

DICOM_A = "d0b71acc-b5a62046-bbb5f6b8-7b173b85-65cdf738"  # test, two phrases, one with two boxes
DICOM_B = "4f2d7c4a-8e3e4d71-4a1b5f2c-9b0d3e6f-12345678"  # test, one phrase
DICOM_C = "aa11bb22-cc33dd44-ee55ff66-77889900-aabbccdd"  # train


def image_rel(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


PATH_A = image_rel("10000032", "50414267", DICOM_A)
PATH_B = image_rel("10000764", "57375967", DICOM_B)
PATH_C = image_rel("11000011", "51111111", DICOM_C)

ROWS = [
    [DICOM_A, "Pleural Effusion", "small left pleural effusion", PATH_A, "200", "300", "80", "60", "400", "500", "test"],
    [DICOM_A, "Lung Opacity", "bilateral opacities", PATH_A, "20", "100", "100", "150", "400", "500", "test"],
    [DICOM_A, "Lung Opacity", "bilateral opacities", PATH_A, "250", "110", "120", "140", "400", "500", "test"],
    [DICOM_B, "Cardiomegaly", "Moderate cardiomegaly.", PATH_B, "100", "200", "180", "120", "320", "360", "test"],
    [DICOM_C, "Pneumonia", "right lower lobe pneumonia", PATH_C, "10", "20", "30", "40", "300", "300", "train"],
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] | tuple[str, ...] = MS_CXR_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def mimic_root(tmp_path: Path) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    for rel, size in ((PATH_A, (400, 500)), (PATH_B, (320, 360)), (PATH_C, (300, 300))):
        target = root / rel
        target.parent.mkdir(parents=True)
        Image.new("L", size, 90).save(target, format="JPEG")
    write_csv(root / MS_CXR_CSV_NAME, ROWS)
    return root


def test_one_study_per_image_with_its_phrase_boxes(mimic_root: Path) -> None:
    adapter = get_dataset("ms_cxr", mimic_root)
    assert adapter.credentialed
    studies = {s.id: s for s in adapter.load("test")}
    assert sorted(studies) == sorted([DICOM_A, DICOM_B])
    a = studies[DICOM_A]
    assert a.image_paths == [str((mimic_root / PATH_A).resolve())]
    assert [(b.phrase, b.category) for b in a.boxes] == [
        ("small left pleural effusion", "Pleural Effusion"),
        ("bilateral opacities", "Lung Opacity"), ("bilateral opacities", "Lung Opacity")]
    # x, y top-left + w, h -> x1, y1, x2, y2 in original pixels
    first = a.boxes[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (200.0, 300.0, 280.0, 360.0)
    assert (first.image_width, first.image_height, first.image_index) == (400, 500, 0)
    # Without a reports source, the findings are the unique phrases as sentences.
    assert a.findings == "Small left pleural effusion. Bilateral opacities."
    assert studies[DICOM_B].findings == "Moderate cardiomegaly."
    assert a.meta["subject_id"] == "10000032" and a.meta["study_id"] == "50414267"
    assert a.meta["findings_source"] == "phrases"
    assert a.labels is None
    assert [s.id for s in adapter.load("train")] == [DICOM_C]
    assert adapter.load("val") == []


def test_phrases_as_findings_dedupes_and_punctuates() -> None:
    assert phrases_as_findings(["left effusion", "Left effusion.", " right  base\nopacity "]) == \
        "Left effusion. Right base opacity."


def test_data_root_and_csv_from_environment(mimic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = write_csv(tmp_path / "boxes.csv", ROWS[3:4])
    monkeypatch.setenv("BOXMED_MIMIC_ROOT", str(mimic_root))
    monkeypatch.setenv("BOXMED_MS_CXR_CSV", str(elsewhere))
    assert [s.id for s in get_dataset("ms_cxr").load("test")] == [DICOM_B]
    # The csv= option wins over the environment.
    assert len(get_dataset("ms_cxr", csv=str(mimic_root / MS_CXR_CSV_NAME)).load("test")) == 2


def test_missing_data_root_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_MIMIC_ROOT", raising=False)
    with pytest.raises(MissingResourceError, match="BOXMED_MIMIC_ROOT"):
        get_dataset("ms_cxr")


def test_findings_from_reports_source_and_chexpert_labels(mimic_root: Path, tmp_path: Path) -> None:
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps({"test": [
        {"id": "other-dicom", "study_id": 50414267, "subject_id": 10000032,
         "report": "Small left pleural effusion.\nPatchy bilateral opacities.", "image_path": ["x/0.jpg"], "split": "test"},
    ]}), encoding="utf-8")
    # MIMIC-CXR's CheXpert CSV in the root is picked up by subject and study id.
    with (mimic_root / "mimic-cxr-2.0.0-chexpert.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                         "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
                         "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"])
        writer.writerow(["10000032", "50414267", "", "", "", "", "", "", "", "1.0", "", "1.0", "", "", "0.0", ""])
    adapter = get_dataset("ms_cxr", mimic_root, reports=str(annotation))
    studies = adapter.load("test")
    # DICOM_B's study has no findings in the source: dropped and counted like any empty study.
    assert [s.id for s in studies] == [DICOM_A]
    assert adapter.dropped_empty == 1
    assert studies[0].findings == "Small left pleural effusion. Patchy bilateral opacities."
    assert studies[0].meta["findings_source"] == "reports"
    assert studies[0].labels["Pleural Effusion"] == 1 and studies[0].labels["Pneumothorax"] == 0
    assert studies[0].labels["Edema"] is None

    reports_csv = tmp_path / "findings.csv"
    with reports_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "findings"])
        writer.writerow(["s57375967", "The heart is enlarged."])
        writer.writerow([DICOM_A, "Left effusion."])
    by_id = {s.id: s.findings for s in get_dataset("ms_cxr", mimic_root, reports=str(reports_csv)).load("test")}
    assert by_id == {DICOM_A: "Left effusion.", DICOM_B: "The heart is enlarged."}


def test_findings_from_mimic_report_sources(mimic_root: Path) -> None:
    """The sources the mimic adapter reads: sectioned CSV, report .txt folder, reports=auto."""
    sectioned = mimic_root / "mimic_cxr_sectioned.csv"
    sectioned.write_text("study,impression,findings\ns50414267,No acute process.,Small left effusion.\n",
                         encoding="utf-8")
    studies = get_dataset("ms_cxr", mimic_root, reports=str(sectioned)).load("test")
    assert [(s.id, s.findings) for s in studies] == [(DICOM_A, "Small left effusion.")]
    sectioned.unlink()
    report = mimic_root / "mimic-cxr-reports" / "files" / "p10" / "p10000764" / "s57375967.txt"
    report.parent.mkdir(parents=True)
    report.write_text("FINAL REPORT\n FINDINGS: The heart is\n enlarged.\n\n IMPRESSION: Cardiomegaly.\n")
    adapter = get_dataset("ms_cxr", mimic_root, reports="auto")
    assert [(s.id, s.findings) for s in adapter.load("test")] == [(DICOM_B, "The heart is enlarged.")]
    assert adapter.dropped_empty == 1
    shutil.rmtree(mimic_root / "mimic-cxr-reports")
    with pytest.raises(DataError, match="reports=auto: no MIMIC-CXR reports"):
        get_dataset("ms_cxr", mimic_root, reports="auto").load("test")


def test_image_path_escaping_the_root_is_refused(mimic_root: Path) -> None:
    write_csv(mimic_root / MS_CXR_CSV_NAME,
              [[DICOM_A, "Edema", "edema", "../../outside.jpg", "1", "1", "5", "5", "10", "10", "test"]])
    with pytest.raises(DataError, match="escapes the data root"):
        get_dataset("ms_cxr", mimic_root).load("test")


def test_missing_image_is_an_error_naming_the_row(mimic_root: Path) -> None:
    (mimic_root / PATH_B).unlink()
    with pytest.raises(DataError, match="image file not found") as caught:
        get_dataset("ms_cxr", mimic_root).load("test")
    assert "line 5" in str(caught.value) and DICOM_B in str(caught.value)
    # check_images=False skips the check (for listing boxes without the images).
    assert len(get_dataset("ms_cxr", mimic_root, check_images=False).load("test")) == 2


@pytest.mark.parametrize(("column", "value", "message"), [
    ("x", "abc", "not a number"),
    ("h", "", "not a number"),
    ("w", "-5", "not positive"),
    ("w", "0", "not positive"),
    ("image_width", "0", "not a positive whole number"),
    ("x", "390", "outside"),  # 390 + 80 > 400
    ("y", "-10", "outside"),
    ("split", "holdout", "unknown split"),
    ("label_text", "  ", "empty 'label_text'"),
])
def test_bad_rows_are_reported_with_file_and_line(tmp_path: Path, column: str, value: str, message: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][MS_CXR_COLUMNS.index(column)] = value
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=message) as caught:
        read_ms_cxr_csv(path)
    assert str(path) in str(caught.value) and "line 3" in str(caught.value)


def test_missing_columns_and_missing_file(tmp_path: Path) -> None:
    header = [c for c in MS_CXR_COLUMNS if c != "image_height"]
    path = write_csv(tmp_path / "short.csv", [r[:9] + r[10:] for r in ROWS], header=header)
    with pytest.raises(DataError, match=r"missing columns \['image_height'\]"):
        read_ms_cxr_csv(path)
    with pytest.raises(DataError, match="MS-CXR CSV not found"):
        read_ms_cxr_csv(tmp_path / "nope.csv")


def test_rows_of_one_image_must_agree(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[2][MS_CXR_COLUMNS.index("split")] = "train"
    with pytest.raises(DataError, match="split 'train' here but 'test' on line 2"):
        read_ms_cxr_csv(write_csv(tmp_path / "mixed.csv", rows))


def test_overshoot_within_tolerance_is_clipped(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[0][4:8] = ["-1", "301", "401", "200"]  # x -1, right edge 400 + 0 = 400, bottom 501 > 500 by 1
    first = read_ms_cxr_csv(write_csv(tmp_path / "edge.csv", rows))[0].to_box()
    assert (first.x1, first.y1, first.x2, first.y2) == (0.0, 301.0, 400.0, 500.0)


def test_validate_split_alias_and_bom(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[4][MS_CXR_COLUMNS.index("split")] = "validate"
    path = tmp_path / "bom.csv"
    write_csv(path, rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    parsed = read_ms_cxr_csv(path)
    assert parsed[4].split == "val" and parsed[0].dicom_id == DICOM_A
