"""Can the `small` preset's vision tower, from random weights, learn the demo's findings?

A quick probe run before any full BoxMed-RL training (boxmed_model/DEMO_RESULTS.md): the
preset's Qwen2-VL vision tower (2 blocks, hidden 256) plus a linear head on its merged visual
tokens is trained on the demo train split to predict the 14 CheXpert positive labels, and
scored on the val split (per-class ROC AUC, micro F1 at 0.5). Chance AUC is 0.5; a class
with AUC near 1 is one the image shows at this resolution.

    python benchmarks/probe_demo_vision.py --scale 0.5 --steps 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=None, help="image scale (default: the demo's)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from sklearn.metrics import f1_score, roc_auc_score
    from transformers import AutoModelForImageTextToText

    from boxmed_eval.datasets import get_dataset
    from boxmed_eval.datasets.demo import DEMO_IMAGE_SCALE
    from boxmed_eval.records import CHEXPERT_CLASSES
    from boxmed_model.data import load_image
    from boxmed_model.tiny import load_processor, resolve_base

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scale = args.scale if args.scale is not None else DEMO_IMAGE_SCALE
    base = resolve_base("small")
    processor = load_processor(base)
    visual = AutoModelForImageTextToText.from_pretrained(base, local_files_only=True).model.visual
    adapter = get_dataset("demo")

    def encode(split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        studies = adapter.load(split)
        images = [load_image(s.image_paths[0], scale)[0] for s in studies]
        batch = processor.image_processor(images=images, return_tensors="pt")
        labels = np.array([[1.0 if s.labels and s.labels.get(c) == 1 else 0.0 for c in CHEXPERT_CLASSES]
                           for s in studies], dtype=np.float32)
        return batch["pixel_values"], batch["image_grid_thw"], labels

    started = time.perf_counter()
    train_px, train_grid, train_y = encode("train")
    val_px, val_grid, val_y = encode("val")
    patches = int(train_grid[0].prod())
    tokens = patches // 4
    print(f"{len(train_y)} train / {len(val_y)} val images at scale {scale}: grid {train_grid[0].tolist()}, "
          f"{tokens} visual tokens each")
    dim = visual.merger.mlp[-1].out_features
    head = torch.nn.Linear(tokens * dim, len(CHEXPERT_CLASSES))
    optimizer = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=args.lr)

    def forward(px: torch.Tensor, grid: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        rows = torch.cat([px[i * patches:(i + 1) * patches] for i in index])
        merged = visual(rows, grid_thw=grid[index]).pooler_output
        return head(merged.reshape(len(index), tokens * dim))

    rng = np.random.default_rng(0)
    y = torch.from_numpy(train_y)
    for step in range(1, args.steps + 1):
        index = rng.choice(len(train_y), size=args.batch_size, replace=False)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(train_px, train_grid, index), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    with torch.no_grad():
        probs = torch.sigmoid(torch.cat([forward(val_px, val_grid, np.arange(i, min(i + 32, len(val_y))))
                                         for i in range(0, len(val_y), 32)])).numpy()
    for k, name in enumerate(CHEXPERT_CLASSES):
        if 0 < val_y[:, k].sum() < len(val_y):
            auc = roc_auc_score(val_y[:, k], probs[:, k])
            print(f"  {name:28s} positives {int(val_y[:, k].sum()):3d}  AUC {auc:.3f}")
    print(f"val micro F1 at 0.5: {f1_score(val_y, probs > 0.5, average='micro', zero_division=0):.3f}; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
