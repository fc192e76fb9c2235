"""Precision (issue 10, part 2): fp32 master weights with bf16 autocast compute.

At SVR's lr 1e-6 an AdamW step (~lr per element) is far below bf16's rounding step for
weights of typical size (2**-8 relative), so bf16 parameters updated in place barely move.
The pipeline loads fp32 and lets the trainer autocast to bf16 (CPU autocast here), so the
weights move, and the stage's saved weights stay fp32 for the next stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from boxmed_model.config import MCLConfig, PipelineConfig  # noqa: E402
from boxmed_model.tiny import build_tiny_base  # noqa: E402
from boxmed_model.train import _sft_args, load_model, run_mcl  # noqa: E402
from tests.test_boxmed_training import _state, make_studies  # noqa: E402

STEPS = 4


def _moved_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Share of the language model's weight elements that changed."""
    changed = total = 0
    for name, tensor in before.items():
        if "visual" in name or ".layers." not in name:  # the language model's decoder layers
            continue
        changed += int((after[name].float() != tensor.float()).sum())
        total += tensor.numel()
    assert total > 0
    return changed / total


def test_bf16_autocast_moves_fp32_master_weights_at_lr_1e_6(tmp_path: Path) -> None:
    from trl import SFTTrainer

    from boxmed_model import data as stage_data
    from boxmed_model.tiny import load_processor

    studies = make_studies(tmp_path / "images")
    base = str(build_tiny_base(tmp_path / "tiny", [s.findings for s in studies]))
    cfg = PipelineConfig(bf16="true", save_steps=1000,
                         mcl=MCLConfig(max_steps=STEPS, learning_rate=1e-6, lr_scheduler="constant"))
    before = _state(base)

    # what the pipeline does: fp32 load, TrainingArguments(bf16=True) -> autocast
    assert load_model(base, cfg).dtype == torch.float32
    result = run_mcl(base, studies, cfg, tmp_path / "run")
    after = _state(result.path)
    assert {t.dtype for t in after.values()} == {torch.float32}  # handed on as fp32 master weights
    fp32_moved = _moved_fraction(before, after)

    # the old way for reference: bf16 parameters optimised in place
    model = load_model(base, cfg).to(torch.bfloat16)
    args = _sft_args(cfg, cfg.mcl, tmp_path / "bf16")
    trainer = SFTTrainer(model=model, args=args, processing_class=load_processor(base),
                         train_dataset=stage_data.to_dataset(stage_data.mcl_rows(studies), cfg.image_scale))
    trainer.train()
    trainer.save_model(str(tmp_path / "bf16" / "final"))
    bf16_after = _state(tmp_path / "bf16" / "final")
    bf16_before = {k: v.to(torch.bfloat16) for k, v in before.items()}
    bf16_moved = _moved_fraction(bf16_before, bf16_after)

    print(f"moved at lr 1e-6: fp32 master {fp32_moved:.3f}, bf16 params {bf16_moved:.3f}")
    assert fp32_moved > 0.5, f"fp32 master weights barely moved: {fp32_moved:.3f}"
    assert bf16_moved < fp32_moved / 2, (fp32_moved, bf16_moved)
