"""The ``figures cases`` view: reference (green) and predicted (red) boxes with their sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from boxmed_eval.cli import main
from boxmed_eval.records import Box, Prediction, Study
from tests.rundir_fixtures import synthetic_run


def _grounded_case(tmp_path: Path) -> tuple[Study, Prediction]:
    image = tmp_path / "img.png"
    Image.fromarray(np.full((80, 100), 90, dtype=np.uint8)).save(image)
    size = {"image_width": 100, "image_height": 80}
    study = Study("case-1", [str(image)], "Small left pleural effusion. No pneumothorax.",
                  boxes=[Box(60, 40, 90, 70, phrase="Small left pleural effusion.", **size)])
    prediction = Prediction("case-1", "Left pleural effusion. Cardiomegaly.",
                            boxes=[Box(10, 40, 40, 70, phrase="Left pleural effusion.", **size)])
    return study, prediction


def test_grounded_case_view_marks_sentences_and_errors(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    from boxmed_eval.plots import GT_COLOR, PRED_COLOR, plot_grounded_case

    texts: list[str] = []
    original = matplotlib.axes.Axes.text

    def record(self, x, y, s, *args, **kwargs):
        texts.append(str(s))
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", record)
    study, prediction = _grounded_case(tmp_path)
    paths = plot_grounded_case(study, prediction, tmp_path / "out" / "case")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert "R1" in texts and "P1" in texts  # box labels name their sentences
    generated = " ".join(next(t for t in texts if t.startswith("P1 ")).split())  # unwrapped
    # entailed, but its box is on the patient's right: not spatially entailed, a laterality error
    assert "entailed" in generated and "boxes not entailed" in generated and "LATERALITY ERROR" in generated
    reference = next(t for t in texts if t.startswith("R1 "))
    assert "box outside left lung" in generated
    assert "R2 No pneumothorax." in reference and "not entailed" in reference
    assert GT_COLOR != PRED_COLOR


def test_figures_cases_command(tmp_path: Path) -> None:
    study, prediction = _grounded_case(tmp_path)
    run = synthetic_run(tmp_path / "run", quality=0.7, seed=1, ids=["case-1"])
    (run / "predictions.jsonl").write_text(json.dumps(prediction.to_dict()) + "\n")
    studies = tmp_path / "studies.jsonl"
    studies.write_text(json.dumps(study.to_dict()) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["figures", "cases", str(run), "--studies", str(studies), "--out",
                                  str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "case_case-1.png").exists() and (tmp_path / "out" / "case_case-1.pdf").exists()
    result = runner.invoke(main, ["figures", "cases", str(run), "--studies", str(studies), "--ids", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
