"""Figures 5 and 6: files are written (PNG + PDF), show what they should (colours of the boxes,
panels present or absent), and bad inputs give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from boxmed_eval.cli import main
from boxmed_eval.errors import DataError
from boxmed_eval.plots import GT_COLOR, PRED_COLOR, figure5, plot_case
from boxmed_eval.records import Box, Prediction, Study
from boxmed_eval.rundata import load_run
from tests.rundir_fixtures import synthetic_run


def _is_png_and_pdf(paths: list[Path]) -> None:
    png, pdf = paths
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 400
    assert pdf.read_bytes()[:5] == b"%PDF-"


def _count_colour(png: Path, hex_colour: str, tolerance: int = 40) -> int:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return int(np.sum(np.abs(pixels - target).sum(axis=2) < tolerance))


def test_figure5_writes_every_panel(tmp_path: Path) -> None:
    runs = [load_run(synthetic_run(tmp_path / n, quality=q, seed=s)) for n, q, s in (("a", 0.8, 1), ("b", 0.5, 2))]
    written = figure5(runs, tmp_path / "fig")
    names = sorted({p.stem for p in written})
    assert names == ["figure5_chexpert_class_f1", "figure5_green_criteria", "figure5_green_radar",
                     "figure5_metric_radar"]
    for stem in names:
        _is_png_and_pdf([tmp_path / "fig" / f"{stem}.png", tmp_path / "fig" / f"{stem}.pdf"])


def test_figure5_without_green_criteria_skips_those_panels(tmp_path: Path) -> None:
    runs = [load_run(synthetic_run(tmp_path / n, quality=q, seed=s, green_criteria=False))
            for n, q, s in (("a", 0.8, 1), ("b", 0.5, 2))]
    names = {p.stem for p in figure5(runs, tmp_path / "fig")}
    assert names == {"figure5_chexpert_class_f1", "figure5_metric_radar"}


def test_figure5_partial_green_columns_is_an_error(tmp_path: Path) -> None:
    path = synthetic_run(tmp_path / "a", quality=0.8, seed=1)
    frame = pd.read_csv(path / "scores.csv", dtype={"id": str}).drop(columns=["green_wrong_severity"])
    frame.to_csv(path / "scores.csv", index=False)
    with pytest.raises(DataError, match="green_wrong_severity"):
        figure5([load_run(path)], tmp_path / "fig")


def _case(tmp_path: Path) -> tuple[Study, Prediction]:
    image = Image.new("L", (400, 400), 30)
    ImageDraw.Draw(image).ellipse((150, 200, 260, 330), fill=180)
    image.save(tmp_path / "cxr.png")
    study = Study(id="case-1", image_paths=[str(tmp_path / "cxr.png")],
                  findings="The cardiac silhouette is mildly enlarged. No pleural effusion.",
                  boxes=[Box(150, 200, 260, 330, phrase="enlarged heart", category="Cardiomegaly",
                             image_width=400, image_height=400)])
    prediction = Prediction(id="case-1", report="There is mild cardiomegaly.",
                            reasoning="<think>The heart is wider than half the thorax.</think>",
                            boxes=[Box(40, 20, 90, 80, phrase="mild cardiomegaly", category="Cardiomegaly",
                                       region="cardiac silhouette", image_width=200, image_height=200)])
    return study, prediction


def test_figure6_draws_green_truth_and_red_prediction(tmp_path: Path) -> None:
    study, prediction = _case(tmp_path)
    paths = plot_case(study, prediction, tmp_path / "fig" / "case")
    _is_png_and_pdf(paths)
    assert _count_colour(paths[0], GT_COLOR) > 200
    assert _count_colour(paths[0], PRED_COLOR) > 200
    # Without boxes, neither colour appears (the headings' colours aside: compare counts).
    bare = plot_case(Study(id="case-1", image_paths=study.image_paths, findings=study.findings),
                     Prediction(id="case-1", report=prediction.report), tmp_path / "fig" / "bare")
    assert _count_colour(bare[0], PRED_COLOR) < _count_colour(paths[0], PRED_COLOR) / 2


def test_figure6_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    study, prediction = _case(tmp_path)
    study.image_paths = [str(tmp_path / "nowhere.png")]
    with pytest.raises(DataError, match="image file not found"):
        plot_case(study, prediction, tmp_path / "x")


def test_figure_commands(tmp_path: Path) -> None:
    study, prediction = _case(tmp_path)
    run = synthetic_run(tmp_path / "run", quality=0.7, seed=1, ids=["case-1", "case-2"])
    (run / "predictions.jsonl").write_text(json.dumps(prediction.to_dict()) + "\n"
                                           + json.dumps({"id": "case-2", "report": "Normal."}) + "\n")
    studies = tmp_path / "studies.jsonl"
    studies.write_text(json.dumps(study.to_dict()) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["figures", "figure6", str(run), "--studies", str(studies), "--out",
                                  str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "figure6_case-1.png").exists() and (tmp_path / "out" / "figure6_case-1.pdf").exists()
    result = runner.invoke(main, ["figures", "figure6", str(run), "--studies", str(studies), "--ids", "case-9"])
    assert result.exit_code == 2 and "case-9" in result.output
    result = runner.invoke(main, ["figures", "figure5", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "figure5_metric_radar.png" in result.output
