"""GPU benchmark of BoxMed-RL on the code users run: the MCL ``SFTTrainer`` and the SVR
``GRPOTrainer`` exactly as ``boxmed_model/train.py`` builds them (``build_mcl_trainer``,
``build_svr_trainer``), and report generation through the ``boxmedrl`` plugin
(``boxmed_model/plugin.py``), on the full-size Qwen2-VL-2B architecture with random weights.

    python benchmarks/bench_boxmedrl_gpu.py --out bench_out                 # one GPU
    python benchmarks/bench_boxmedrl_gpu.py --only generation --out bench_out
    python benchmarks/bench_boxmedrl_gpu.py --tiny --out /tmp/bench         # CPU smoke run (tests)

Nothing is downloaded. The model is ``Qwen/Qwen2-VL-2B-Instruct``'s architecture from its
config values (``benchmarks/qwen2vl_2b_instruct/``: 2,208,985,600 parameters), randomly
initialised and saved (bf16, like the hub checkpoint) to ``--work``, with that model's image
processor configuration (min/max pixels, patch 14, merge 2, CLIP mean/std) and chat
template. The tokenizer is a stand-in: a byte-level BPE with the Qwen special tokens (the real
one is a hub download), so text runs to somewhat more tokens than with Qwen's; image tokens,
which dominate the sequences, are exactly the real processor's. The data are synthetic
MIMIC-CXR-JPG-sized studies (2544x3056 JPEGs, 1/4-scaled by the pipeline as in training, so
~636x764 px reach the processor: ~620 image tokens each) with MIMIC-length findings and one
box per study.

Measures (``results.json`` and a Markdown table on stdout):

1. **MCL** (SFT, whole model trained, AdamW, fp32 master weights with bf16 autocast and
   gradient checkpointing as ``train.py`` sets them on a GPU) at per-device batch sizes
   ``--mcl-batches``: s/step (mean over the measured steps, data loading included), tokens/s,
   MFU and peak GPU memory.
2. **SVR** (GRPO, the paper's 8 generations, 256-token completions, gradient accumulation
   2, beta 0.04 with the frozen reference): s/step, tokens/s, MFU, peak memory.
3. **Generation** of ``--reports`` reports (default 3,858, the MIMIC-CXR test split) through
   the plugin, as ``boxmed-eval run`` calls it: batch 1 (measured on ``--single-sample``
   reports, extrapolated) against ``--gen-batch`` (all reports), ``--new-tokens`` tokens each
   (end of text suppressed until then, so every report has the same length).

MFU = model FLOPs per second / the GPU's dense bf16 peak (H100/H200 989 TFLOPS, A100 312;
``--peak-tflops`` overrides). Model FLOPs per trained token: 6 x parameters (forward and
backward matmuls, the tied LM head included) + causal attention 6 x layers x width x
sequence; vision patches likewise with the vision tower's parameters and full attention.
SVR counts 2 (sampling) + 2 (reference) + 6 (policy) x parameters per token.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boxmed_eval.records import Box, Study  # noqa: E402
from boxmed_model import prompts  # noqa: E402
from boxmed_model.config import MCLConfig, PipelineConfig, SVRConfig  # noqa: E402
from boxmed_model.tiny import (  # noqa: E402
    DEFAULT_CORPUS, QWEN_SPECIAL_TOKENS, build_tiny_base, image_only_processor_class, train_tokenizer)

QWEN2VL_2B = Path(__file__).resolve().parent / "qwen2vl_2b_instruct"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
MIMIC_IMAGE = (2544, 3056)  # a typical MIMIC-CXR-JPG frontal view (width, height)

# MIMIC-style findings (about the length of an average MIMIC-CXR findings section) with the
# phrase that gets a box and where (pixel fractions of the image).
FINDINGS = [
    ("PA and lateral views of the chest were provided. There is a small left pleural effusion with adjacent "
     "basilar atelectasis. No pneumothorax is seen. The cardiomediastinal silhouette is within normal limits. "
     "Mild degenerative changes of the thoracic spine are noted. No acute osseous abnormality.",
     "small left pleural effusion", "Pleural Effusion", (0.55, 0.62, 0.92, 0.88)),
    ("The heart is moderately enlarged. There is mild pulmonary vascular congestion and interstitial edema "
     "without focal consolidation. Small bilateral pleural effusions are present. An endotracheal tube "
     "terminates 4 cm above the carina and a nasogastric tube courses below the diaphragm.",
     "The heart is moderately enlarged", "Cardiomegaly", (0.30, 0.45, 0.75, 0.80)),
    ("There is a new opacity in the right lower lobe concerning for pneumonia. The left lung is clear. "
     "There is no pleural effusion or pneumothorax. Heart size is normal. The mediastinal and hilar "
     "contours are unremarkable. Surgical clips project over the right upper quadrant.",
     "opacity in the right lower lobe", "Pneumonia", (0.10, 0.55, 0.45, 0.85)),
]


# --------------------------------------------------------------------------- model and data

def qwen2vl_2b_config(tokenizer: Any, layers: int | None = None) -> Any:
    """Qwen2-VL-2B-Instruct's config values, with the stand-in tokenizer's special-token ids;
    ``layers`` cuts both towers to that many blocks (a quick check of the full-width code path)."""
    from transformers import Qwen2VLConfig

    values = json.loads((QWEN2VL_2B / "config.json").read_text())
    if layers:
        values["num_hidden_layers"] = values["max_window_layers"] = layers
        values["vision_config"] = {**values["vision_config"], "depth": layers}
    values.update({key: tokenizer.convert_tokens_to_ids(token) for key, token in (
        ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"), ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"), ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"))}, pad_token_id=tokenizer.pad_token_id)
    return Qwen2VLConfig(**values)


def qwen2vl_2b_processor(tokenizer: Any) -> Any:
    """The image-only Qwen2-VL processor with Qwen2-VL-2B-Instruct's image processor config
    and chat template."""
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    values = json.loads((QWEN2VL_2B / "preprocessor_config.json").read_text())
    image_processor = Qwen2VLImageProcessorPil(**{k: v for k, v in values.items()
                                                  if k not in ("image_processor_type", "processor_class")})
    return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                        chat_template=(QWEN2VL_2B / "chat_template.jinja").read_text())


def stand_in_tokenizer(texts: list[str]) -> Any:
    return train_tokenizer([DEFAULT_CORPUS, *prompts.all_template_texts(), *texts], vocab_size=1024)


def full_size_base(out: Path, texts: list[str], layers: int | None = None) -> Path:
    """Qwen2-VL-2B-Instruct's architecture with random weights, its processor config and chat
    template and the stand-in tokenizer, saved as a model directory (the trainers load by path)."""
    from transformers import Qwen2VLForConditionalGeneration

    if (out / "config.json").is_file():
        return out
    tokenizer = stand_in_tokenizer(texts)
    config = qwen2vl_2b_config(tokenizer, layers)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # init on the GPU: seconds, not minutes
        model = Qwen2VLForConditionalGeneration(config)
    model.to(torch.bfloat16)  # saved as the hub checkpoint is; train.load_model loads fp32 masters
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = qwen2vl_2b_processor(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text((QWEN2VL_2B / "chat_template.jinja").read_text())
    del model
    _free()
    return out


def synthetic_studies(root: Path, n: int, size: tuple[int, int], n_images: int = 8) -> list[Study]:
    """``n`` studies over ``n_images`` distinct JPEGs (smooth noise, radiograph-sized), each
    with MIMIC-length findings and one box on its finding phrase."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    paths = []
    for i in range(n_images):
        path = root / f"img{i}.jpg"
        if not path.is_file():
            small = rng.integers(0, 255, (height // 16, width // 16), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    studies = []
    for i in range(n):
        findings, phrase, category, (x1, y1, x2, y2) = FINDINGS[i % len(FINDINGS)]
        box = Box(x1 * width, y1 * height, x2 * width, y2 * height, phrase=phrase, category=category,
                  image_width=width, image_height=height)
        studies.append(Study(id=f"s{i}", image_paths=[paths[i % n_images]], findings=findings, split="train",
                             boxes=[box]))
    return studies


# --------------------------------------------------------------------------- measuring

def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """Peak GPU memory allocated since the last reset; on CPU the process's peak RSS so far."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def peak_flops(args: argparse.Namespace) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((value * 1e12 for key, value in PEAK_TFLOPS.items() if key in name), None)


def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall-clock at the end of every optimizer step (GPU synchronised)."""

        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.ends = [time.perf_counter()]

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.ends.append(time.perf_counter())

    return StepTimer()


@dataclass
class Shape:
    """Token counts of one optimizer step, from the trainer's own collated batches."""

    tokens: float = 0.0  # language-model positions (text + image tokens, no padding)
    patches: float = 0.0  # vision-tower patches (4 per image token: 2x2 merge)
    seq_len: float = 0.0  # mean sequence length
    patches_per_image: float = 0.0


def measure_shape(trainer: Any, steps: int = 1) -> Shape:
    loader = trainer.get_train_dataloader()
    accumulation = trainer.args.gradient_accumulation_steps
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) >= accumulation * steps:
            break
    mask = [b["attention_mask"] for b in batches]
    grids = torch.cat([b["image_grid_thw"] for b in batches]) if "image_grid_thw" in batches[0] else None
    shape = Shape()
    shape.tokens = float(sum(int(m.sum()) for m in mask)) / steps
    shape.seq_len = float(sum(int(m.sum()) for m in mask)) / sum(m.shape[0] for m in mask)
    if grids is not None:
        per_image = grids.prod(-1).float()
        shape.patches = float(per_image.sum()) / steps
        shape.patches_per_image = float(per_image.mean())
    return shape


def params(model: Any) -> tuple[int, int]:
    """(language model incl. the tied head, vision tower incl. merger) parameter counts."""
    inner = getattr(model, "model", model)
    visual = sum(p.numel() for p in inner.visual.parameters())
    return sum(p.numel() for p in model.parameters()) - visual, visual


def train_flops(model_cfg: Any, n_lm: int, n_vis: int, shape: Shape, factor: float = 6.0) -> float:
    """Model FLOPs of one step over ``shape`` (``factor`` 6: forward + backward; 2: forward)."""
    text, vision = model_cfg.text_config, model_cfg.vision_config
    attention = factor * text.num_hidden_layers * text.hidden_size * shape.seq_len * shape.tokens / 2  # causal
    vision_attention = factor * vision.depth * vision.embed_dim * shape.patches_per_image * shape.patches
    return factor * (n_lm * shape.tokens + n_vis * shape.patches) + attention + vision_attention


def _logged(history: list[dict[str, Any]], key: str) -> list[float]:
    return [float(row[key]) for row in history if key in row]


def _timed(timer: Any, warmup: int) -> float:
    """Mean seconds per measured optimizer step (data loading included)."""
    intervals = [b - a for a, b in zip(timer.ends, timer.ends[1:])][warmup:]
    return statistics.mean(intervals)


# --------------------------------------------------------------------------- 1. MCL

def bench_mcl(args: argparse.Namespace, model_dir: Path, studies: list[Study], batch: int) -> dict[str, Any]:
    from boxmed_model.train import build_mcl_trainer

    cfg = PipelineConfig(save_steps=10**9, logging_steps=1,
                         mcl=MCLConfig(max_steps=args.warmup + args.steps, per_device_batch_size=batch))
    _free()
    trainer, _ = build_mcl_trainer(str(model_dir), studies, cfg, args.work / f"mcl_b{batch}")
    timer = _step_timer()
    trainer.add_callback(timer)
    shape = measure_shape(trainer, args.warmup + args.steps)  # mean over the steps the run takes
    trainer.train()
    seconds = _timed(timer, args.warmup)
    logged = _logged(trainer.state.log_history, "num_tokens")  # TRL's running count of attended tokens
    if len(logged) == args.warmup + args.steps:  # measured steps' own tokens (rows differ in length)
        shape.tokens = (logged[-1] - (logged[args.warmup - 1] if args.warmup else 0.0)) / args.steps
    n_lm, n_vis = params(trainer.model)
    flops = train_flops(trainer.model.config, n_lm, n_vis, shape)
    peak = peak_flops(args)
    result = {"batch": batch, "gradient_checkpointing": bool(trainer.args.gradient_checkpointing
                                                              if hasattr(trainer.args, "gradient_checkpointing")
                                                              else trainer.args.activation_checkpointing),
              "bf16_autocast": bool(trainer.args.bf16), "tokens_per_step": shape.tokens,
              "image_patches_per_step": shape.patches, "seq_len": shape.seq_len, "step_s": seconds,
              "tokens_per_s": shape.tokens / seconds, "tflops": flops / seconds / 1e12,
              "mfu": flops / seconds / peak if peak else None, "peak_mem_gib": peak_memory_gib(),
              "trl_num_tokens_last": logged[-1] if logged else None,
              "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    del trainer
    _free()
    return result


# --------------------------------------------------------------------------- 2. SVR

def bench_svr(args: argparse.Namespace, model_dir: Path, studies: list[Study]) -> dict[str, Any]:
    from boxmed_model.train import build_svr_trainer

    cfg = PipelineConfig(save_steps=10**9, logging_steps=1, svr=SVRConfig(
        max_steps=args.warmup + args.steps, num_generations=args.num_generations,
        max_completion_length=args.svr_tokens, gradient_accumulation_steps=args.svr_accumulation))
    _free()
    trainer, processor = build_svr_trainer(str(model_dir), studies, cfg, args.work / "svr")
    timer = _step_timer()
    trainer.add_callback(timer)
    trainer.train()
    seconds = _timed(timer, args.warmup)
    history = trainer.state.log_history
    completion = statistics.mean(_logged(history, "completions/mean_length")[args.warmup:] or [0.0])
    # prompt length (image + SVR prompt) from the processor, as GRPOTrainer tokenises it
    from boxmed_model.data import load_image

    image, _ = load_image(studies[0].image_paths[0], cfg.image_scale)
    text = processor.apply_chat_template(prompts.svr_messages(studies[0].boxes[0].phrase), add_generation_prompt=True,
                                         tokenize=False)
    encoded = processor(text=[text], images=[[image]], return_tensors="pt")
    prompt_tokens = int(encoded["attention_mask"].sum())
    patches = float(encoded["image_grid_thw"].prod(-1).sum())
    samples = cfg.svr.num_generations * cfg.svr.gradient_accumulation_steps  # completions per optimizer step
    n_lm, n_vis = params(trainer.model)
    shape = Shape(tokens=samples * (prompt_tokens + completion), patches=samples * patches,
                  seq_len=prompt_tokens + completion, patches_per_image=patches)
    flops = train_flops(trainer.model.config, n_lm, n_vis, shape, factor=10.0)  # sample 2 + reference 2 + policy 6
    peak = peak_flops(args)
    result = {"num_generations": cfg.svr.num_generations, "completions_per_step": samples,
              "max_completion_tokens": args.svr_tokens, "mean_completion_tokens": completion,
              "prompt_tokens": prompt_tokens, "step_s": seconds,
              "completion_tokens_per_s": samples * completion / seconds,
              "tokens_per_s": shape.tokens / seconds, "tflops": flops / seconds / 1e12,
              "mfu": flops / seconds / peak if peak else None, "peak_mem_gib": peak_memory_gib(),
              "trl_step_time_s": statistics.mean(_logged(history, "step_time")[args.warmup:] or [float("nan")])}
    del trainer
    _free()
    return result


# --------------------------------------------------------------------------- 3. generation

def _generate(plugin: Any, studies: list[Study], batch: int) -> float:
    sync()
    start = time.perf_counter()
    for first in range(0, len(studies), batch):  # as the harness calls a plugin: one batch at a time
        plugin.generate(studies[first:first + batch])
    sync()
    return time.perf_counter() - start


def bench_generation(args: argparse.Namespace, model_dir: Path, studies: list[Study]) -> dict[str, Any]:
    from boxmed_model.plugin import BoxMedRL

    _free()
    plugin = BoxMedRL(weights=str(model_dir), batch_size=args.gen_batch, max_new_tokens=args.new_tokens)
    plugin.setup()
    # Random weights would stop anywhere: suppress the end token until --new-tokens, so every
    # report has the same length and tokens/s is exact (in memory only; the model dir is untouched).
    plugin.model.generation_config.min_new_tokens = args.new_tokens
    _generate(plugin, studies[:2], 2)  # warm-up (kernels, allocator)
    single = studies[:min(args.single_sample, len(studies))]
    plugin.batch_size = 1
    single_s = _generate(plugin, single, 1)
    plugin.batch_size = args.gen_batch
    batched_s = _generate(plugin, studies, args.gen_batch)
    per_single, per_batched = single_s / len(single), batched_s / len(studies)
    result = {"reports": len(studies), "new_tokens": args.new_tokens, "gen_batch": args.gen_batch,
              "dtype": str(next(plugin.model.parameters()).dtype), "batch1_reports_measured": len(single),
              "batch1_s_per_report": per_single, "batch1_projected_total_s": per_single * len(studies),
              "batch1_tokens_per_s": args.new_tokens / per_single, "batched_total_s": batched_s,
              "batched_s_per_report": per_batched, "batched_tokens_per_s": args.new_tokens / per_batched,
              "speedup": per_single / per_batched, "peak_mem_gib": peak_memory_gib()}
    del plugin
    _free()
    return result


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: the tiny preset, demo-sized images, a couple of steps, a few reports")
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--work", type=Path, default=None, help="model, images, trainer dirs (default OUT/work)")
    parser.add_argument("--only", choices=["mcl", "svr", "generation"], action="append")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--mcl-batches", default="1,4,8", help="per-device MCL batch sizes (paper: 1)")
    parser.add_argument("--steps", type=int, default=4, help="measured optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--svr-tokens", type=int, default=256, help="SVR max completion length (paper: 256)")
    parser.add_argument("--svr-accumulation", type=int, default=2)
    parser.add_argument("--reports", type=int, default=3858, help="reports generated (MIMIC-CXR test split)")
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--single-sample", type=int, default=24, help="batch-1 reports measured (extrapolated)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens per report")
    parser.add_argument("--layers", type=int, default=None,
                        help="cut both towers to N blocks (full width): a quick check of the code path, not the benchmark")
    args = parser.parse_args(argv)
    if args.tiny:
        args.mcl_batches, args.steps, args.warmup = "2", 1, 1
        args.num_generations, args.svr_tokens, args.svr_accumulation = 2, 8, 1
        args.reports, args.gen_batch, args.single_sample, args.new_tokens = 6, 3, 2, 8
    args.work = args.work or args.out / "work"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    size = (256, 256) if args.tiny else MIMIC_IMAGE
    train_studies = synthetic_studies(args.work / "images", 16, size)
    texts = [f for f, *_ in FINDINGS]
    if args.tiny:
        model_dir = args.work / "tiny_base"
        if not (model_dir / "config.json").is_file():
            build_tiny_base(model_dir, texts, preset="tiny")
    else:
        name = "qwen2vl_2b_random" + (f"_{args.layers}layers" if args.layers else "")
        model_dir = full_size_base(args.work / name, texts, args.layers)
    device = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine() or "cpu")
    results: dict[str, Any] = {
        "device": device, "gpu": cuda, "torch": torch.__version__, "tiny": args.tiny, "model": str(model_dir),
        "architecture": "tiny preset" if args.tiny else "Qwen2-VL-2B-Instruct (random init)"
                        + (f", cut to {args.layers} blocks per tower" if args.layers and not args.tiny else ""),
        "source_image_size": size, "special_tokens": list(QWEN_SPECIAL_TOKENS), "mcl": [], "svr": [], "generation": []}
    if not cuda and not args.tiny:
        print("note: no CUDA GPU here; the full-size run on CPU is very slow (use --tiny for a smoke run)",
              file=sys.stderr)
    todo = args.only or ["mcl", "svr", "generation"]
    if "mcl" in todo:
        for batch in (int(b) for b in args.mcl_batches.split(",")):
            try:
                results["mcl"].append(bench_mcl(args, model_dir, train_studies, batch))
            except torch.OutOfMemoryError:
                results["mcl"].append({"batch": batch, "error": "out of memory"})
                _free()
            print(json.dumps(results["mcl"][-1]), flush=True)
    if "svr" in todo:
        results["svr"].append(bench_svr(args, model_dir, train_studies))
        print(json.dumps(results["svr"][-1]), flush=True)
    if "generation" in todo:
        reports = synthetic_studies(args.work / "images", args.reports, size)
        results["generation"].append(bench_generation(args, model_dir, reports))
        print(json.dumps(results["generation"][-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a (no GPU peak)"


def markdown(results: dict[str, Any]) -> str:
    memory = "peak GPU GiB" if results["gpu"] else "peak RSS GiB"
    lines = [f"Device: {results['device']} (torch {results['torch']}), {results['architecture']}"
             + ("" if results["gpu"] else " — no GPU: CPU numbers, not a GPU measurement"), ""]
    if results["mcl"]:
        lines += [f"| MCL (SFTTrainer) batch | tokens/step | s/step | tokens/s | MFU | {memory} |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in results["mcl"]:
            if "error" in r:
                lines.append(f"| {r['batch']} | - | - | {r['error']} | - | - |")
                continue
            lines.append(f"| {r['batch']} | {r['tokens_per_step']:.0f} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                         f"{_pct(r['mfu'])} | {r['peak_mem_gib']:.1f} |")
        lines.append("")
    for r in results["svr"]:
        lines += [f"SVR (GRPOTrainer), {r['completions_per_step']} completions/step (<= {r['max_completion_tokens']} "
                  f"tokens, mean {r['mean_completion_tokens']:.0f}): {r['step_s']:.2f} s/step, "
                  f"{r['tokens_per_s']:.0f} tokens/s, MFU {_pct(r['mfu'])}, {memory} {r['peak_mem_gib']:.1f}", ""]
    for r in results["generation"]:
        lines += [f"Generation (boxmedrl plugin, {r['dtype']}) of {r['reports']} reports x {r['new_tokens']} tokens: "
                  f"batch 1 {r['batch1_s_per_report']:.3f} s/report ({r['batch1_tokens_per_s']:.0f} tokens/s; "
                  f"projected {r['batch1_projected_total_s']:.0f} s), batch {r['gen_batch']} "
                  f"{r['batched_s_per_report']:.4f} s/report ({r['batched_tokens_per_s']:.0f} tokens/s; measured "
                  f"{r['batched_total_s']:.3g} s); speed-up {r['speedup']:.1f}x, {memory} {r['peak_mem_gib']:.1f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
