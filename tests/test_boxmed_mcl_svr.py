"""MCL -> SVR on `demo` with the tiny preset: MCL's boxed chain rows are written in exactly
SVR's answer format, so the completions GRPO samples at SVR's first step already parse
(R_format > 0, boxes in ``<answer>``), while the same step from the untrained base has none.

The smallest setting found that teaches the tiny base (hidden 64, 2 layers) the format: the
two demo training studies with boxes and the shortest findings (2 report rows + 2 boxed
chain rows), 160 MCL steps at lr 2e-2 (the paper's 1e-4 is for a pretrained 2B model): 7 of 8 sampled
completions then pass R_format and 8 of 8 carry boxes on demo v3 with two torch threads (100
steps passed with one thread and failed with two: sampling at temperature 1.0 is thread-sensitive); 60
steps were not enough (no parsable sample at temperature 1.0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from boxmed_eval.datasets.base import get_dataset  # noqa: E402
from boxmed_model import train  # noqa: E402
from boxmed_model.config import MCLConfig, PipelineConfig, SVRConfig  # noqa: E402
from boxmed_model.rewards import answer_text, completion_text, format_reward_one, parse_boxes  # noqa: E402
from boxmed_model.tiny import build_tiny_base  # noqa: E402


def _recording_iou_reward(calls: list[list[str]]) -> Any:
    original = train.iou_reward

    def iou_reward(completions: list[Any], solution: list[Any], **kwargs: Any) -> list[float]:
        calls.append([completion_text(c) for c in completions])
        return original(completions, solution, **kwargs)

    return iou_reward  # same __name__: TRL logs it as rewards/iou_reward


def test_first_svr_step_after_mcl_has_parsable_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = get_dataset("demo", None)
    train_studies = dataset.load("train")
    studies = sorted((s for s in train_studies if s.boxes), key=lambda s: len(s.findings))[:2]
    base = str(build_tiny_base(tmp_path / "base", [s.findings for s in train_studies], preset="tiny"))
    cfg = PipelineConfig(save_steps=1000,
                         mcl=MCLConfig(max_steps=160, learning_rate=2e-2, warmup_steps=5, per_device_batch_size=4),
                         svr=SVRConfig(max_steps=1, num_generations=4, per_device_batch_size=8,
                                       max_completion_length=96, gradient_accumulation_steps=1))
    calls: list[list[str]] = []
    monkeypatch.setattr(train, "iou_reward", _recording_iou_reward(calls))

    # the untrained base: GRPO's first step samples no parsable answer (nothing to learn from)
    train.run_pipeline("svr", base, cfg, tmp_path / "no_mcl", pretrain_studies=studies)
    assert len(calls) == 1 and len(calls[0]) == 8
    assert not any(format_reward_one(c) or parse_boxes(answer_text(c)) for c in calls[0])

    calls.clear()
    train.run_pipeline("mcl", base, cfg, tmp_path / "run", pretrain_studies=studies)
    manifest = train.run_pipeline("svr", base, cfg, tmp_path / "run", pretrain_studies=studies)
    assert manifest["stages"]["svr"]["lineage"] == ["mcl", "svr"]
    first_step = calls[0]  # the completions of SVR's first step (one reward call per step)
    formatted = [c for c in first_step if format_reward_one(c) == 1.0]
    with_boxes = [c for c in first_step if parse_boxes(answer_text(c))]
    assert len(first_step) == 8 and formatted and with_boxes, first_step
    logged = next(row for row in json.loads((tmp_path / "run" / "svr" / "log_history.json").read_text())
                  if "rewards/format_reward/mean" in row)
    assert logged["rewards/format_reward/mean"] == pytest.approx(len(formatted) / len(first_step))
