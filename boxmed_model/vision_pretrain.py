"""A stand-in for a pretrained vision encoder, for the randomly initialised presets (a demo choice).

The paper starts from Qwen2-VL-2B, whose vision tower already encodes images. The ``small`` and
``tiny`` presets start from random weights, and on the demo their language model learns to
ignore a random vision tower trained end to end (the visual tokens' norm grows 4 -> 164 and
their image-to-image spread collapses; boxmed_model/DEMO_RESULTS.md). So, when
``[vision_pretrain] steps > 0``, the preset's vision tower and projector (``model.visual``) are
first trained to predict the 14 CheXpert labels of the *training* reports (read by the rules
labeler, positive = 1) from its merged visual tokens through a linear head that is then thrown
away; the language model is untouched. The result is written as a new base directory
(``<preset>_base_vision<steps>``) that every Table-4 row starts from, as every row of the paper
starts from the same pretrained Qwen2-VL.

Off by default (the paper's pipeline, and real Qwen2-VL bases, never run it).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES, Study

log = logging.getLogger(__name__)

DONE = "boxmed_vision_pretrain.json"


def training_labels(studies: list[Study]) -> Any:
    """(studies, 14) float array: 1 where the rules labeler reads a positive finding in the report."""
    import numpy as np

    from boxmed_eval.metrics.chexpert import binarize
    from boxmed_eval.metrics.labelers import get_labeler

    labels = get_labeler("rules").label([s.findings for s in studies])
    return binarize(labels, uncertain_positive=False).astype(np.float32)


def pretrain_vision(base: str | os.PathLike[str], studies: list[Study], out_dir: str | os.PathLike[str], *,
                    steps: int, batch_size: int = 32, learning_rate: float = 1e-3, scale: float = 0.25,
                    seed: int = 0) -> Path:
    """Write ``base`` with its vision tower trained on the studies' labels to ``out_dir`` (once:
    a finished directory is reused) and return it."""
    import torch
    from transformers import AutoModelForImageTextToText

    from boxmed_model.data import load_image
    from boxmed_model.tiny import LOCAL_ONLY, load_processor

    out = Path(out_dir)
    if (out / DONE).is_file() and (out / "config.json").is_file():
        return out
    if not studies:
        raise DataError("vision pretraining needs training studies", fix="pass --dataset, or set "
                          "[vision_pretrain] steps = 0")
    processor = load_processor(str(base))
    model = AutoModelForImageTextToText.from_pretrained(str(base), dtype=torch.float32, **LOCAL_ONLY)
    visual = model.model.visual
    images = [load_image(s.image_paths[0], scale)[0] for s in studies]
    encoded = processor.image_processor(images=images, return_tensors="pt")
    grids = encoded["image_grid_thw"]
    if not bool((grids == grids[0]).all()):
        raise DataError("vision pretraining needs images of one size (its head reads a fixed number of visual "
                          f"tokens); these {len(studies)} studies have {len(set(map(tuple, grids.tolist())))} sizes",
                          fix="set [vision_pretrain] steps = 0 (it is meant for the demo's random presets)")
    pixels = encoded["pixel_values"].reshape(len(studies), int(grids[0].prod()), -1)
    targets = torch.from_numpy(training_labels(studies))
    losses = train_vision_tower(visual, pixels, grids, targets, steps=steps, batch_size=batch_size,
                                learning_rate=learning_rate, seed=seed)
    size = min(batch_size, len(studies))
    tokens = pixels.shape[1] // visual.spatial_merge_size ** 2
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for extra in ("boxmed_preset.json", "chat_template.jinja"):
        if (Path(base) / extra).is_file() and not (out / extra).is_file():
            (out / extra).write_bytes((Path(base) / extra).read_bytes())
    summary = {"base": str(base), "steps": steps, "batch_size": size, "learning_rate": learning_rate,
               "scale": scale, "studies": len(studies), "visual_tokens": tokens,
               "positives_per_class": dict(zip(CHEXPERT_CLASSES, targets.sum(0).int().tolist())),
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
    (out / DONE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    log.info("vision pretraining: BCE %.4f -> %.4f in %d steps", summary["first_loss"], summary["last_loss"], steps)
    return out


def train_vision_tower(visual: Any, pixels: Any, grids: Any, targets: Any, *, steps: int, batch_size: int = 32,
                       learning_rate: float = 1e-3, seed: int = 0) -> list[float]:
    """Train a Qwen2-VL vision tower in place (with its projector) to predict ``targets`` (n, 14)
    from ``pixels`` (n, patches, patch dim; one grid for all, ``grids`` (n, 3)) through a fresh
    linear head on the flattened merged tokens; BCE, AdamW, ``batch_size`` images a step drawn
    without replacement. Returns the per-step losses (the head is thrown away)."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    count, patches = pixels.shape[0], pixels.shape[1]
    tokens = patches // visual.spatial_merge_size ** 2
    dim = visual.merger.mlp[-1].out_features
    head = torch.nn.Linear(tokens * dim, targets.shape[1])
    optimizer = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=learning_rate)
    rng = np.random.default_rng(seed)
    visual.train()
    size = min(batch_size, count)
    losses = []
    for _ in tqdm(range(steps), desc="vision pretraining", unit="step"):
        index = torch.from_numpy(rng.choice(count, size=size, replace=False))
        merged = visual(pixels[index].reshape(size * patches, -1), grid_thw=grids[index]).pooler_output
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(merged.reshape(size, tokens * dim)),
                                                                    targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
