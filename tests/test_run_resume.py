"""Runs: the run directory, resume after a crash or kill -9, and the end-to-end CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from boxmed_eval.cli import main
from boxmed_eval.evaluation import RunConfig, run
from boxmed_eval.runs import RunDirectory
from tests.conftest import write_iu_dataset

ROOT = Path(__file__).resolve().parents[1]
FAST_METRICS = "token_overlap"
import tests.cheap_metric  # noqa: E402,F401  registers token_overlap


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_complete_run_dir(iu_root, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--model", "retrieval", "--dataset", "iu_xray", "--data-root",
                                       str(iu_root), "--out", str(out), "--batch-size", "4",
                                       "--metrics", "nlg,token_overlap"])
    assert result.exit_code == 0, result.output
    assert "bleu_4" in result.output
    for name in ("run.json", "predictions.jsonl", "scores.csv", "summary.json", "references.jsonl"):
        assert (out / name).exists(), name
    config = json.loads((out / "run.json").read_text())
    assert config["status"] == "complete" and config["model"] == "retrieval" and config["versions"]["torch"]
    predictions = _lines(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [f"CXR{i:04d}_IM-{i:04d}" for i in range(15, 21)]
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str})
    assert list(scores["id"]) == [p["id"] for p in predictions] and "bleu_4" in scores
    summary = json.loads((out / "summary.json").read_text())
    # The fixture's images encode the report kind, so retrieval finds the right report.
    assert summary["bleu_4"] > 0.99 and summary["token_overlap"] == 1.0


def test_resume_after_crash_generates_only_missing(iu_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = RunConfig(model="retrieval", dataset="iu_xray", data_root=str(iu_root), out=str(out), batch_size=2,
                       metrics=["token_overlap"])
    from boxmed_eval.models import retrieval

    calls: list[list[str]] = []
    original = retrieval.RetrievalBaseline.generate

    def crashing(self, studies):
        calls.append([s.id for s in studies])
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return original(self, studies)

    monkeypatch.setattr(retrieval.RetrievalBaseline, "generate", crashing)
    with pytest.raises(RuntimeError):
        run(config)
    assert len(_lines(out / "predictions.jsonl")) == 2
    calls.clear()
    monkeypatch.setattr(retrieval.RetrievalBaseline, "generate", original)
    run_dir, summary = run(config)
    ids = [p["id"] for p in _lines(out / "predictions.jsonl")]
    assert len(ids) == len(set(ids)) == 6
    assert json.loads((out / "run.json").read_text())["resumed"] == 1


def test_half_written_line_is_repaired(iu_root, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(model="retrieval", dataset="iu_xray", data_root=str(iu_root), out=str(out), limit=3,
                       metrics=["token_overlap"])
    run(config)
    text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(text[:1]) + text[1][:15])  # killed mid-write
    run(config)
    ids = [p["id"] for p in _lines(out / "predictions.jsonl")]
    assert sorted(ids) == sorted(json.loads(line)["id"] for line in text)


def test_different_config_refuses_to_mix(iu_root, tmp_path):
    out = tmp_path / "run"
    base = dict(model="retrieval", dataset="iu_xray", data_root=str(iu_root), out=str(out), limit=2, metrics=[])
    run(RunConfig(**base))
    from boxmed_eval.errors import BoxmedError

    with pytest.raises(BoxmedError, match="holds a different run"):
        run(RunConfig(**{**base, "model_args": {"size": 16}}))
    run(RunConfig(**{**base, "model_args": {"size": 16}, "overwrite": True}))


def test_sharded_generation_merges(iu_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = RunConfig(model="retrieval", dataset="iu_xray", data_root=str(iu_root), out=str(out), metrics=[])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run(config)  # rank 1 writes its shard and leaves
    assert (out / "predictions.rank1.jsonl").exists()
    monkeypatch.setenv("RANK", "0")
    run(config)
    ids = [p["id"] for p in _lines(out / "predictions.jsonl")]
    assert ids == [f"CXR{i:04d}_IM-{i:04d}" for i in range(15, 21)]
    assert not list(out.glob("predictions.rank*.jsonl"))


def test_kill_minus_9_then_resume_matches_uninterrupted(tmp_path):
    root = write_iu_dataset(tmp_path / "iu", n_train=12, n_val=1, n_test=24)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["run", "--model", "slow_retrieval", "--dataset", "iu_xray", "--data-root", str(root), "--batch-size", "2",
            "--metrics", "token_overlap"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "tests" / "slow_plugin_cli.py"), *args, "--out", str(killed)]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = killed / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if predictions.exists() and len(predictions.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(predictions.read_text().splitlines())
    assert 4 <= written < 24, "the kill must land in the middle of generation"
    assert not (killed / "summary.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [p["id"] for p in _lines(predictions)]
    assert len(ids) == 24 and len(set(ids)) == 24

    clean = tmp_path / "clean"
    subprocess.run([sys.executable, str(ROOT / "tests" / "slow_plugin_cli.py"), *args, "--out", str(clean)], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((clean / "summary.json").read_text())
    metrics = [k for k, v in b.items() if isinstance(v, float) and k != "scoring_seconds"]
    assert metrics and {k: a[k] for k in metrics} == {k: b[k] for k in metrics}
    assert (killed / "predictions.jsonl").read_text() == (clean / "predictions.jsonl").read_text()
