"""Run directories in the format of ARCHITECTURE.md, built for the stats/tables/plots tests
(independent of the code that writes real runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.records import CHEXPERT_CLASSES

PER_SAMPLE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "chexpert_example_f1", "green")


def write_run(path: Path, *, scores: pd.DataFrame, summary: dict[str, Any], info: dict[str, Any] | None = None,
              per_class: pd.DataFrame | None = None, predictions: list[dict[str, Any]] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps(info or {"model": "fixture", "dataset": "demo", "split": "test"}))
    (path / "summary.json").write_text(json.dumps(summary))
    scores.to_csv(path / "scores.csv", index=False)
    if per_class is not None:
        per_class.to_csv(path / "per_class.csv", index=False)
    if predictions is not None:
        (path / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return path


def synthetic_run(path: Path, *, quality: float, seed: int, n: int = 60, green_criteria: bool = True,
                  dataset: str = "demo", ids: list[str] | None = None) -> Path:
    """A run whose per-sample scores rise with ``quality`` (0..1); deterministic per seed."""
    rng = np.random.default_rng(seed)
    ids = ids or [f"s{i:03d}" for i in range(n)]
    n = len(ids)
    # A shared per-study difficulty makes runs correlated, as real runs on the same studies are.
    difficulty = np.random.default_rng(0).uniform(0, 1, n)
    frame = pd.DataFrame({"id": ids})
    for k, metric in enumerate(PER_SAMPLE):
        base = 0.15 + 0.35 * (1 - difficulty) + 0.25 * quality
        frame[metric] = np.clip(base + rng.normal(0, 0.05, n) - 0.04 * k, 0, 1).round(6)
    if green_criteria:
        for column in ("green_false_finding", "green_missing_finding", "green_wrong_location", "green_wrong_severity",
                       "green_false_comparison", "green_missing_comparison"):
            frame[column] = rng.poisson(1.5 * (1.2 - quality), n)
        frame["green_matched"] = rng.poisson(1 + 3 * quality, n)
    summary = {m: float(frame[m].mean()) for m in PER_SAMPLE}
    summary["bleu_2"] = summary["bleu_1"] * 0.7
    summary["bleu_3"] = summary["bleu_1"] * 0.5
    summary["chexpert_f1"] = summary["chexpert_example_f1"] * 0.95
    summary["n_studies"] = n
    summary["scoring_seconds"] = 1.5
    summary["conventions"] = {"nlg_preprocessing": "lower"}
    per_class = pd.DataFrame({
        "category": list(CHEXPERT_CLASSES),
        "accuracy": np.clip(0.6 + 0.3 * quality + rng.normal(0, 0.03, 14), 0, 1),
        "precision": np.clip(0.3 + 0.3 * quality + rng.normal(0, 0.03, 14), 0, 1),
        "recall": np.clip(0.3 + 0.3 * quality + rng.normal(0, 0.03, 14), 0, 1),
        "f1": np.clip(0.3 + 0.3 * quality + rng.normal(0, 0.03, 14), 0, 1),
        "support": rng.integers(1, 40, 14),
    })
    info = {"model": "fixture", "model_args": {"quality": quality}, "dataset": dataset, "split": "test",
            "seed": seed}
    predictions = [{"id": i, "report": f"report {i} quality {quality}"} for i in ids]
    return write_run(path, scores=frame, summary=summary, info=info, per_class=per_class, predictions=predictions)
