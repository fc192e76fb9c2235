"""``boxmed-eval label``: CSV/JSONL in, class-name columns out (1 / 0 / -1 / blank)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from boxmed_eval.cli import main
from boxmed_eval.datasets.chexpert_labels import read_chexpert_labels
from boxmed_eval.records import CHEXPERT_CLASSES


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_label_jsonl_to_csv(tmp_path: Path) -> None:
    source = tmp_path / "reports.jsonl"
    write_jsonl(source, [
        {"id": "s1", "report": "Mild cardiomegaly.\nNo pleural effusion."},
        {"id": "s2", "report": "Pneumonia cannot be excluded."},
        {"id": "s3", "report": ""},  # empty: all blank
    ])
    out = tmp_path / "out" / "labels.csv"
    result = CliRunner().invoke(main, ["label", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["s1", "s2", "s3"]
    assert set(CHEXPERT_CLASSES) <= set(rows[0])
    assert rows[0]["Cardiomegaly"] == "1" and rows[0]["Pleural Effusion"] == "0" and rows[0]["Edema"] == ""
    assert rows[1]["Pneumonia"] == "-1"
    assert all(rows[2][c] == "" for c in CHEXPERT_CLASSES)
    assert rows[0]["report"].startswith("Mild cardiomegaly")
    # the project's CheXpert CSV reader reads it back by class name
    back = read_chexpert_labels(out, key_columns=("id",))
    assert back["s1"]["Cardiomegaly"] == 1 and back["s2"]["Pneumonia"] == -1 and back["s3"]["No Finding"] is None
    assert not list(out.parent.glob(".*tmp*"))  # atomic write leaves no temp file


def test_label_csv_default_output_and_no_report(tmp_path: Path) -> None:
    source = tmp_path / "preds.csv"
    source.write_text('id,report\na,"No effusion, pneumothorax or consolidation."\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["label", str(source), "--no-report"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "preds_labels.csv"
    header, row = out.read_text(encoding="utf-8").splitlines()
    assert header.split(",")[:2] == ["id", "No Finding"] and "report" not in header
    values = dict(zip(header.split(","), row.split(",")))
    assert values["Pleural Effusion"] == values["Pneumothorax"] == values["Consolidation"] == "0"
    assert values["No Finding"] == "1"


def test_label_errors_are_clear(tmp_path: Path, monkeypatch) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["label", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output
    source = tmp_path / "r.jsonl"
    write_jsonl(source, [{"id": "a", "report": "No effusion."}])
    monkeypatch.delenv("BOXMED_CHEXBERT_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    chexbert = runner.invoke(main, ["label", str(source), "--labeler", "chexbert"])
    assert chexbert.exit_code == 2 and "--checkpoint" in chexbert.output
    unknown = runner.invoke(main, ["label", str(source), "--labeler", "magic"])
    assert unknown.exit_code == 2 and "rules" in unknown.output
