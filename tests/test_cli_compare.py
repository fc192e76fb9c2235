"""The compare / leaderboard / ablation / table3 commands end to end (click runner)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from boxmed_eval.cli import main
from tests.rundir_fixtures import synthetic_run

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations"


@pytest.fixture()
def table4_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for name, quality, seed in (("wo_mcl_svr", 0.5, 11), ("wo_svr", 0.6, 12), ("wo_mcl", 0.7, 13), ("full", 0.8, 14)):
        synthetic_run(root / name, quality=quality, seed=seed, n=80)
    return root


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_compare_markdown_csv_and_latex(table4_runs: Path, tmp_path: Path) -> None:
    full, worst, best = (str(table4_runs / n) for n in ("full", "wo_mcl_svr", "wo_mcl"))
    result = invoke("compare", full, worst, best)
    assert result.exit_code == 0, result.output
    assert "| BLEU-1 |" in result.output and "wo\\_mcl\\_svr" in result.output
    result = invoke("compare", full, worst, "--format", "csv", "--metrics", "bleu_1,rouge_l")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["metric"] for r in rows] == ["bleu_1", "rouge_l"]
    assert all(r["wo_mcl_svr_stars"] == "**" for r in rows)
    assert all(float(r["p_wo_mcl_svr"]) < 0.01 for r in rows)
    out = tmp_path / "cmp.tex"
    result = invoke("compare", full, worst, "--format", "latex", "--test", "randomization", "--trials", "500",
                    "--correction", "holm", "--out", str(out))
    assert result.exit_code == 0 and r"\toprule" in out.read_text() and "Holm" in out.read_text()
    result = invoke("compare", full, worst, "--test", "bootstrap", "--resamples", "200")
    assert "95% CI of Δ" in result.output


def test_compare_greater_flips_the_direction(table4_runs: Path) -> None:
    full, worst = str(table4_runs / "full"), str(table4_runs / "wo_mcl_svr")
    less = list(csv.DictReader(io.StringIO(invoke("compare", full, worst, "--format", "csv").output)))
    greater = list(csv.DictReader(io.StringIO(invoke("compare", worst, full, "--alternative", "greater",
                                                     "--format", "csv").output)))
    assert [r["p_wo_mcl_svr"] for r in less] == [r["p_full"] for r in greater]


def test_compare_errors_are_clear(table4_runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["compare", str(table4_runs / "full"), str(tmp_path / "missing")])
    assert result.exit_code == 2 and "run directory not found" in result.output
    other = synthetic_run(tmp_path / "other", quality=0.5, seed=3, ids=[f"x{i}" for i in range(80)])
    result = runner.invoke(main, ["compare", str(table4_runs / "full"), str(other)])
    assert result.exit_code == 2 and "runs are not paired" in result.output and "x0" in result.output
    no_scores = tmp_path / "no_scores"
    shutil.copytree(table4_runs / "full", no_scores)
    (no_scores / "scores.csv").unlink()
    result = runner.invoke(main, ["compare", str(table4_runs / "full"), str(no_scores)])
    assert result.exit_code == 2 and "scores.csv is missing" in result.output
    bad = tmp_path / "bad"
    shutil.copytree(table4_runs / "full", bad)
    (bad / "summary.json").write_text("{not json")
    result = runner.invoke(main, ["compare", str(table4_runs / "full"), str(bad)])
    assert result.exit_code == 2 and "malformed JSON" in result.output
    dup = tmp_path / "dup"
    shutil.copytree(table4_runs / "full", dup)
    frame = pd.read_csv(dup / "scores.csv", dtype={"id": str})
    pd.concat([frame, frame.iloc[:1]]).to_csv(dup / "scores.csv", index=False)
    result = runner.invoke(main, ["compare", str(table4_runs / "full"), str(dup)])
    assert result.exit_code == 2 and "duplicate id 's000'" in result.output


def test_leaderboard_command(table4_runs: Path, tmp_path: Path) -> None:
    result = invoke("leaderboard", "--dataset", "mimic", "--runs", str(table4_runs / "full"))
    assert result.exit_code == 0
    assert "| *Local runs* |" in result.output and "| BoxMed-RL | 2025 | 0.426 |" in result.output
    assert "scored on dataset 'demo'" in result.output
    result = invoke("leaderboard", "--dataset", "iu_xray", "--format", "csv")
    assert "R2Gen,2020,0.475,0.304,0.219,0.170,0.187,0.371,0.530" in result.output
    result = invoke("leaderboard", "--dataset", "demo", str(table4_runs / "full"), str(table4_runs / "wo_svr"),
                    "--format", "latex", "--standalone")
    assert result.output.startswith(r"\documentclass") and r"\textbf{" in result.output


def test_ablation_command_with_the_shipped_spec(table4_runs: Path) -> None:
    result = invoke("ablation", str(SPECS / "table4.toml"), "--runs-root", str(table4_runs))
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if l.startswith("| w/o") or l.startswith("| BoxMed-RL")]
    assert len(lines) == 4
    assert lines[0].startswith("| w/o MCL & SVR | ✗ | ✗ | ✓ |") and "\\*\\*" in lines[0]
    assert "\\*" not in lines[3]  # the full model carries no stars
    result = CliRunner().invoke(main, ["ablation", str(SPECS / "table5.toml"), "--runs-root", str(table4_runs)])
    assert result.exit_code == 2 and "5 run directories of the spec do not exist" in result.output


def test_table3_command(table4_runs: Path) -> None:
    result = invoke("table3", str(table4_runs / "full"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 14 and rows[0]["category"] == "No Finding"
    (table4_runs / "full" / "per_class.csv").unlink()
    result = CliRunner().invoke(main, ["table3", str(table4_runs / "full")])
    assert result.exit_code == 2 and "per_class.csv is missing" in result.output
