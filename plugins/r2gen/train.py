"""``boxmed-eval train r2gen --dataset D``: R2Gen's training recipe on any boxmed-eval dataset.

Per-dataset settings are upstream's run scripts (``--setting``, chosen from the dataset):

| setting   | max_seq_length | threshold | epochs | StepLR (step, gamma) |
|-----------|----------------|-----------|--------|----------------------|
| iu_xray   | 60             | 3         | 100    | 50, 0.1              |
| mimic_cxr | 100            | 10        | 30     | 1, 0.8               |

Both: Adam (amsgrad), lr 5e-5 for the visual extractor and 1e-4 for the rest, weight decay
5e-5, batch 16, gradient values clipped to 0.1, validation BLEU-4 (beam 3) after every
epoch with the best checkpoint kept (``model_best.pth``), early stop after 50 epochs
without improvement. Every epoch writes ``current_checkpoint.pth``; running the same command
again resumes from it. ``history.jsonl`` gets one line per epoch.

Validation BLEU is computed as upstream does: pycocoevalcap BLEU on the tokenizer's decoding
of both sides (cleaned, truncated to max_seq_length, out-of-vocabulary words as ``<unk>``).

``--monitor chexpert_f1`` (a named variant, not upstream) keeps the checkpoint with the best
validation CheXpert micro F1 (rules labeler on both decoded sides) instead of BLEU-4: on small
data BLEU-4 favours the epochs where the model writes one fluent normal report for every study.

``--preset demo`` (not upstream) is a CPU-sized recipe for the synthetic ``demo`` dataset
(:data:`PRESETS`): ResNet-18 at base width 16 from random weights, 128 px images, a 2-layer
d_model 128 transformer, higher learning rates, images cached, checkpoint by validation
CheXpert F1. Options given on the command line override the preset's values.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

SETTINGS: dict[str, dict[str, Any]] = {
    "iu_xray": {"max_seq_length": 60, "threshold": 3, "epochs": 100, "step_size": 50, "gamma": 0.1},
    "mimic_cxr": {"max_seq_length": 100, "threshold": 10, "epochs": 30, "step_size": 1, "gamma": 0.8},
}


MONITORS = ("bleu_4", "chexpert_f1")

# name -> TrainingOptions values (command-line options override them)
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"epochs": 30, "image_size": 128, "d_model": 128, "d_ff": 256, "num_layers": 2, "num_heads": 4,
             "resnet_depth": 18, "resnet_width": 16, "lr_ve": 1e-3, "lr_ed": 5e-4, "step_size": 10,
             "gamma": 0.5, "cache_images": True, "monitor": "chexpert_f1", "validate_first": True},
}


@dataclass
class TrainingOptions:
    dataset: str
    out: str
    data_root: str | None = None
    dataset_options: dict[str, Any] | None = None
    setting: str | None = None  # iu_xray | mimic_cxr; None: from the dataset
    epochs: int | None = None
    batch_size: int = 16
    max_seq_length: int | None = None
    threshold: int | None = None
    lr_ve: float = 5e-5
    lr_ed: float = 1e-4
    weight_decay: float = 5e-5
    step_size: int | None = None
    gamma: float | None = None
    early_stop: int = 50
    beam_size: int = 3
    seed: int = 789  # upstream's default
    device: str | None = None
    image_size: int = 224
    imagenet_weights: str | None = None
    d_model: int = 512
    d_ff: int = 512
    num_layers: int = 3
    num_heads: int = 8
    rm_num_slots: int = 3
    resnet_depth: int = 101
    resnet_width: int = 64
    train_limit: int | None = None
    val_limit: int | None = None
    validate_first: bool = False
    num_workers: int = 0
    cache_images: bool = False
    restart: bool = False
    monitor: str = "bleu_4"  # upstream; chexpert_f1: see the module docstring


def choose_setting(dataset: str, studies: list[Any]) -> str:
    """iu_xray for IU X-Ray, mimic_cxr for MIMIC-CXR; for other datasets iu_xray when most
    training studies have two or more images (two views), else mimic_cxr."""
    if dataset in ("iu_xray", "mimic_cxr"):
        return dataset
    if dataset.startswith("mimic"):
        return "mimic_cxr"
    two_views = sum(len(s.image_paths) >= 2 for s in studies)
    return "iu_xray" if studies and two_views * 2 >= len(studies) else "mimic_cxr"


def bleu_scores(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 (pycocoevalcap) on already-cleaned texts, as upstream's compute_scores."""
    from pycocoevalcap.bleu.bleu import Bleu

    if not references:
        return {f"bleu_{n}": float("nan") for n in range(1, 5)}
    gts = {i: [r] for i, r in enumerate(references)}
    # An empty hypothesis makes pycocoevalcap's BLEU fail; it scores as a lone "." instead.
    res = {i: [h if h.strip() else "."] for i, h in enumerate(hypotheses)}
    corpus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu_{n + 1}": float(corpus[n]) for n in range(4)}


def chexpert_micro_f1(references: list[str], hypotheses: list[str]) -> float:
    """CheXpert micro F1 (positive = 1, 14 classes; the rules labeler on both sides), as the
    harness's ``chexpert_f1`` computes it on whole reports."""
    import numpy as np

    from boxmed_eval.metrics.chexpert import binarize
    from boxmed_eval.metrics.labelers import get_labeler

    if not references:
        return float("nan")
    labeler = get_labeler("rules")
    truth = binarize(labeler.label(references), uncertain_positive=False)
    predicted = binarize(labeler.label(hypotheses), uncertain_positive=False)
    tp = int((truth & predicted).sum())
    wrong = int((truth ^ predicted).sum())
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def evaluate(model: Any, loader: Any, tokenizer: Any, *, device: Any, beam_size: int,
             max_length: int, desc: str = "validate") -> tuple[dict[str, float], list[str], list[str]]:
    """Generate for every batch of ``loader``; BLEU (and CheXpert micro F1) against the decoded
    references."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    references, hypotheses = [], []
    with torch.no_grad():
        for images, ids, _mask in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None):
            generated = model.generate(images.to(device), beam_size=beam_size, max_length=max_length)
            hypotheses += tokenizer.decode_batch(generated.cpu().tolist())
            references += tokenizer.decode_batch(ids[:, 1:].tolist())
    scores = bleu_scores(references, hypotheses)
    scores["chexpert_f1"] = chexpert_micro_f1(references, hypotheses)
    return scores, references, hypotheses


def train_r2gen(options: TrainingOptions) -> dict[str, Any]:
    """Train (or resume) and return a summary: best validation BLEU-4 and its epoch, paths."""
    import random

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from boxmed_eval.datasets import get_dataset
    from boxmed_eval.errors import BoxmedError, DataError
    from boxmed_eval.records import atomic_write_json
    from plugins.r2gen.checkpoint import read_checkpoint, save_checkpoint
    from plugins.r2gen.data import ReportDataset, collate, language_model_loss
    from plugins.r2gen.model import R2GenConfig, R2GenModel
    from plugins.r2gen.tokenizer import R2GenTokenizer

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    current_path, best_path = out / "current_checkpoint.pth", out / "model_best.pth"
    history_path = out / "history.jsonl"
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    adapter = get_dataset(options.dataset, options.data_root, **(options.dataset_options or {}))
    train_studies = adapter.load("train")
    val_studies = adapter.load("val")
    if options.train_limit:
        train_studies = train_studies[:options.train_limit]
    if options.val_limit:
        val_studies = val_studies[:options.val_limit]
    if not train_studies:
        raise BoxmedError(f"dataset {options.dataset!r} has no training studies")
    if not val_studies:
        raise BoxmedError(f"dataset {options.dataset!r} has no validation studies: R2Gen selects its checkpoint by "
                          "validation BLEU-4")

    resume = None if options.restart or not current_path.exists() else read_checkpoint(current_path)
    if resume is not None and not isinstance(resume.get("config"), dict):
        raise DataError("not a checkpoint of `boxmed-eval train r2gen`", file=current_path,
                        fix="pass --restart to start over, or another --out")
    if resume is not None:
        config = R2GenConfig.from_dict(resume["config"])
        tokenizer = R2GenTokenizer.from_dict(resume["tokenizer"], source=current_path)
        setting = config.dataset_name
        log.info("resuming from %s (epoch %s)", current_path, resume.get("epoch"))
    else:
        setting = options.setting or choose_setting(options.dataset, train_studies)
        if setting not in SETTINGS:
            raise BoxmedError(f"unknown --setting {setting!r}; use iu_xray or mimic_cxr")
    defaults = SETTINGS[setting]
    max_seq_length = options.max_seq_length or defaults["max_seq_length"]
    threshold = options.threshold if options.threshold is not None else defaults["threshold"]
    epochs = options.epochs or defaults["epochs"]
    step_size = options.step_size or defaults["step_size"]
    gamma = options.gamma if options.gamma is not None else defaults["gamma"]

    if resume is None:
        tokenizer = R2GenTokenizer.build([s.findings for s in train_studies], threshold=threshold,
                                         dataset_name=setting)
        config = R2GenConfig(dataset_name=setting, vocab_size=tokenizer.vocab_size, resnet_depth=options.resnet_depth,
                             resnet_width=options.resnet_width, d_model=options.d_model, d_ff=options.d_ff,
                             num_heads=options.num_heads, num_layers=options.num_layers,
                             rm_num_slots=options.rm_num_slots, rm_num_heads=options.num_heads,
                             rm_d_model=options.d_model, max_seq_length=max_seq_length, image_size=options.image_size)
    tokenizer.save(out / "tokenizer.json")
    atomic_write_json(out / "config.json", {"model": config.to_dict(), "training": asdict(options),
                                            "setting": setting, "epochs": epochs, "step_size": step_size,
                                            "gamma": gamma, "threshold": threshold})

    torch.manual_seed(options.seed)
    random.seed(options.seed)
    np.random.seed(options.seed)
    model = R2GenModel(config)
    if resume is None and options.imagenet_weights:
        model.visual_extractor.load_imagenet_weights(options.imagenet_weights)
    model.to(device)
    visual_ids = {id(p) for p in model.visual_extractor.parameters()}
    optimizer = torch.optim.Adam(
        [{"params": list(model.visual_extractor.parameters()), "lr": options.lr_ve},
         {"params": [p for p in model.parameters() if id(p) not in visual_ids], "lr": options.lr_ed}],
        weight_decay=options.weight_decay, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma)

    start_epoch, best_bleu, best_epoch, not_improved = 1, -math.inf, None, 0
    if resume is not None:
        model.load_state_dict(resume["state_dict"], strict=True)
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["lr_scheduler"])
        start_epoch = int(resume["epoch"]) + 1
        best_bleu = float(resume["monitor_best"])
        best_epoch = resume.get("best_epoch")
        not_improved = int(resume.get("not_improved", 0))

    train_set = ReportDataset(train_studies, tokenizer, max_seq_length=max_seq_length, image_size=config.image_size,
                              train=True, seed=options.seed, cache_images=options.cache_images)
    val_set = ReportDataset(val_studies, tokenizer, max_seq_length=max_seq_length, image_size=config.image_size,
                            train=False, cache_images=options.cache_images)
    val_loader = DataLoader(val_set, batch_size=options.batch_size, shuffle=False, collate_fn=collate,
                            num_workers=options.num_workers)

    def record(entry: dict[str, Any]) -> None:
        with history_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        click.echo("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()),
                   err=True)

    if options.validate_first and resume is None:
        scores, _, _ = evaluate(model, val_loader, tokenizer, device=device, beam_size=options.beam_size,
                                max_length=max_seq_length, desc="validate (untrained)")
        record({"epoch": 0, **{f"val_{k}": v for k, v in scores.items()}})

    for epoch in range(start_epoch, epochs + 1):
        started = time.time()
        # Re-seeding per epoch makes a resumed run shuffle and augment like an uninterrupted one.
        generator = torch.Generator().manual_seed(options.seed + epoch)
        train_set.rng.seed(options.seed + epoch)
        torch.manual_seed(options.seed + epoch)
        loader = DataLoader(train_set, batch_size=options.batch_size, shuffle=True, collate_fn=collate,
                            num_workers=options.num_workers, generator=generator)
        model.train()
        total, batches = 0.0, 0
        progress = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=None)
        for images, ids, mask in progress:
            images, ids, mask = images.to(device), ids.to(device), mask.to(device)
            loss = language_model_loss(model(images, ids), ids, mask)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
            progress.set_postfix(loss=f"{loss.item():.3f}")
        scheduler.step()
        scores, _, hypotheses = evaluate(model, val_loader, tokenizer, device=device, beam_size=options.beam_size,
                                         max_length=max_seq_length)
        improved = scores[options.monitor] >= best_bleu  # upstream keeps the later of equal scores
        if improved:
            best_bleu, best_epoch, not_improved = scores[options.monitor], epoch, 0
        else:
            not_improved += 1
        payload = {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "lr_scheduler": scheduler.state_dict(), "monitor_best": best_bleu, "best_epoch": best_epoch,
                   "not_improved": not_improved, "config": config.to_dict(), "tokenizer": tokenizer.to_dict()}
        if improved:
            save_checkpoint(best_path, {k: v for k, v in payload.items() if k not in ("optimizer", "lr_scheduler")})
        save_checkpoint(current_path, payload)
        record({"epoch": epoch, "train_loss": total / max(batches, 1),
                **{f"val_{k}": v for k, v in scores.items()}, "best_epoch": best_epoch,
                "seconds": round(time.time() - started, 1), "example": hypotheses[0] if hypotheses else ""})
        if not_improved > options.early_stop:
            click.echo(f"validation BLEU-4 did not improve for {options.early_stop} epochs: stopping", err=True)
            break
    return {"best_val_bleu_4" if options.monitor == "bleu_4" else f"best_val_{options.monitor}": best_bleu,
            "monitor": options.monitor, "best_value": best_bleu, "best_epoch": best_epoch,
            "best_checkpoint": str(best_path),
            "tokenizer": str(out / "tokenizer.json"), "history": str(history_path)}


@click.command("r2gen")
@click.option("--dataset", required=True, help="Dataset name (see `boxmed-eval datasets`); needs train and val splits.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset folder.")
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE", help="Dataset adapter option, repeatable.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/r2gen_train_DATASET); an existing one resumes.")
@click.option("--setting", type=click.Choice(sorted(SETTINGS)), default=None,
              help="R2Gen's per-dataset recipe, report cleaning and views (default: from the dataset).")
@click.option("--epochs", type=int, default=None, help="Default: the setting's (IU 100, MIMIC 30).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-seq-length", type=int, default=None, help="Default: the setting's (IU 60, MIMIC 100).")
@click.option("--threshold", type=int, default=None, help="Vocabulary word-count threshold (IU 3, MIMIC 10).")
@click.option("--lr-ve", type=float, default=5e-5, show_default=True, help="Visual extractor learning rate.")
@click.option("--lr-ed", type=float, default=1e-4, show_default=True, help="Encoder-decoder learning rate.")
@click.option("--weight-decay", type=float, default=5e-5, show_default=True)
@click.option("--step-size", type=int, default=None, help="StepLR step in epochs (IU 50, MIMIC 1).")
@click.option("--gamma", type=float, default=None, help="StepLR factor (IU 0.1, MIMIC 0.8).")
@click.option("--early-stop", type=int, default=50, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--beam-size", type=int, default=3, show_default=True, help="Beam width for validation.")
@click.option("--seed", type=int, default=789, show_default=True)
@click.option("--device", default=None, help="torch device (default cuda when available).")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--imagenet-weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="torchvision-format ResNet .pth for the visual extractor (R2Gen starts from ImageNet).")
@click.option("--d-model", type=int, default=512, show_default=True)
@click.option("--d-ff", type=int, default=512, show_default=True)
@click.option("--num-layers", type=int, default=3, show_default=True)
@click.option("--num-heads", type=int, default=8, show_default=True)
@click.option("--rm-num-slots", type=int, default=3, show_default=True)
@click.option("--resnet-depth", type=click.Choice(["18", "34", "50", "101", "152"]), default="101", show_default=True)
@click.option("--resnet-width", type=int, default=64, show_default=True, help="Base width (64 = torchvision's).")
@click.option("--train-limit", type=int, default=None, help="Use only the first N training studies.")
@click.option("--val-limit", type=int, default=None, help="Validate on the first N validation studies.")
@click.option("--validate-first", is_flag=True, help="Also score the untrained model (logged as epoch 0).")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--cache-images", is_flag=True,
              help="Keep resized images in memory across epochs (small datasets: 3*S^2 bytes per image).")
@click.option("--restart", is_flag=True, help="Ignore an existing current_checkpoint.pth in --out.")
@click.option("--monitor", type=click.Choice(MONITORS), default="bleu_4", show_default=True,
              help="Validation score that selects model_best.pth (bleu_4 = upstream).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="A named recipe (demo: CPU-sized, for the synthetic demo dataset); explicit options win.")
@click.pass_context
def train_command(ctx: click.Context, **kwargs: Any) -> None:
    """Train R2Gen on a dataset's train split, keeping the best validation BLEU-4 checkpoint."""
    from click.core import ParameterSource

    from boxmed_eval.plugins import parse_model_args

    preset = kwargs.pop("preset")
    for key, value in (PRESETS[preset] if preset else {}).items():
        if ctx.get_parameter_source(key) in (ParameterSource.DEFAULT, None):
            kwargs[key] = value

    kwargs["dataset_options"] = parse_model_args(kwargs.pop("dataset_option"))
    kwargs["resnet_depth"] = int(kwargs["resnet_depth"])
    kwargs["out"] = kwargs["out"] or str(Path("runs") / f"r2gen_train_{kwargs['dataset']}")
    summary = train_r2gen(TrainingOptions(**kwargs))
    click.echo(f"best validation {summary['monitor']} {summary['best_value']:.4f} at epoch {summary['best_epoch']}; "
               f"checkpoint {summary['best_checkpoint']}")
    click.echo(f"evaluate: boxmed-eval run --model r2gen --dataset {kwargs['dataset']} "
               f"--model-arg weights={summary['best_checkpoint']}")
