"""The demo paper (`boxmed-eval reproduce demo`, `make paper-demo`): its baselines and targets
by hand, and the whole command at a few steps with the `tiny` preset (the real run is not a test:
boxmed_model/DEMO_RESULTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from boxmed_eval.cli import main
from boxmed_eval.datasets.demo import DEMO_IMAGE_SCALE
from boxmed_model.paper_demo import _wilcoxon_greater, best_constant_report, render_targets


def test_best_constant_report_by_hand() -> None:
    references = ["Small right pleural effusion.", "Small left pleural effusion.", "The lungs are clear."]
    candidates = ["The lungs are clear.", "Moderate right pleural effusion.", "The lungs are clear."]
    best = best_constant_report(candidates, references)
    # effusion everywhere: TP 2 (the effusions), FP 1 (the normal study), FN 1 (its No Finding) -> 4/6;
    # the normal report: TP 1, FP 2 (No Finding on the effusions), FN 2 (their effusions) -> 2/6
    assert best["report"] == "Moderate right pleural effusion."
    assert best["chexpert_f1"] == pytest.approx(4 / 6)
    assert best["candidates"] == 2


def test_wilcoxon_greater_is_one_tailed() -> None:
    ids = pd.Index([f"s{i}" for i in range(12)], name="id")
    low = pd.Series([0.1 * (i % 3) for i in range(12)], index=ids)
    high = low + pd.Series([0.2 + 0.01 * i for i in range(12)], index=ids)
    assert _wilcoxon_greater(high, low)["p"] < 0.01
    assert _wilcoxon_greater(low, high)["p"] > 0.99
    with_gap = high.copy()
    with_gap.iloc[0] = float("nan")  # a study without reference boxes is left out of the pairs
    assert _wilcoxon_greater(with_gap, low)["n"] == 11
    assert _wilcoxon_greater(low, low) == {"n": 12, "nonzero": 0, "p": 1.0}


def test_demo_config_reads_the_demo_at_its_scale() -> None:
    from boxmed_model.config import PipelineConfig

    cfg = PipelineConfig.from_toml(Path(__file__).resolve().parents[1] / "boxmed_model/configs/demo_cpu.toml")
    assert cfg.image_scale == DEMO_IMAGE_SCALE == 0.5


def test_plugin_reads_images_at_the_trained_scale(tmp_path: Path) -> None:
    from boxmed_model.plugin import BoxMedRL

    (tmp_path / "boxmedrl.json").write_text(json.dumps({"config": {"image_scale": 0.5}, "stages": {}}))
    assert BoxMedRL(weights=str(tmp_path)).image_scale == 0.5
    assert BoxMedRL(weights=str(tmp_path), image_scale=0.25).image_scale == 0.25
    assert BoxMedRL(weights="tiny").image_scale == 0.25  # not a trained run: the paper's 1/4


def test_paper_demo_end_to_end_at_a_few_steps(tmp_path: Path) -> None:
    out = tmp_path / "paper-demo"
    result = CliRunner().invoke(main, ["reproduce", "demo", "--out", str(out), "--base", "tiny", "--max-steps", "1",
                                       "--train-limit", "4", "--limit", "3", "--rows", "full,wo_svr",
                                       "--r2gen-epochs", "1", "--threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for stage in range(1, 9):
        assert f"[paper-demo {stage}/8]" in result.output
    assert "[paper-demo] done in" in result.output
    for name in ("table1_demo", "table3_demo", "table4_demo"):
        assert (out / f"{name}.md").is_file() and (out / f"{name}.csv").is_file()
    table4 = (out / "table4_demo.md").read_text()
    assert "w/o SVR" in table4 and "BoxMed-RL" in table4 and "w/o MCL &" not in table4
    board = (out / "table1_demo.csv").read_text()
    for run in ("retrieval", "r2gen", "full", "wo_svr"):
        assert run in board
    assert list((out / "figures").glob("figure5_*.png")) and list((out / "figures").glob("figure6_*.png"))
    targets = json.loads((out / "targets.json").read_text())
    assert {c["target"] for c in targets["checks"]} >= {"BoxMed-RL full distinct reports", "R2Gen distinct reports"}
    assert set(targets["runs"]) == {"retrieval", "r2gen", "full", "wo_svr"}
    assert all(0 <= r["distinct_reports"] <= 3 for r in targets["runs"].values())
    grounding = json.loads((out / "phrase_grounding.json").read_text())
    assert {"mcl", "svr"} <= set(grounding) and grounding["mcl"]["phrases"] > 0
    assert render_targets(targets).count("\n| ") >= len(targets["checks"])
    # the manifests record the demo's scale, and the runs read the test images at it
    manifest = json.loads((out / "train" / "full" / "boxmedrl.json").read_text())
    assert manifest["config"]["image_scale"] == DEMO_IMAGE_SCALE
    run_info = json.loads((out / "runs" / "full" / "run.json").read_text())
    assert json.dumps(run_info).count('"image_scale": 0.5') >= 1
