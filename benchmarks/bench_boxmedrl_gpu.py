"""GPU benchmarks of BoxMed-RL on the full-size Qwen2-VL-2B architecture (random weights,
built from its config: nothing is downloaded).

    python benchmarks/bench_boxmedrl_gpu.py --out bench_out            # on one GPU
    python benchmarks/bench_boxmedrl_gpu.py --tiny --out /tmp/bench    # CPU smoke run (tiny model)

Measures, and writes ``results.json`` + prints a markdown table:

1. MCL step (SFT forward + backward + AdamW step): tokens/s and model FLOPs utilisation
   (MFU = 6 * trainable params * tokens/s + attention FLOPs, over the GPU's dense bf16 peak)
   at the paper's batch size 1 and at larger batches, SDPA vs flash attention (when installed).
2. Generation of N reports (default 3,858 = MIMIC-CXR test size) from 1/4-resolution images,
   128 new tokens each (EOS disabled so every report has the full length: worst case):
   batch 1 (on a sample, extrapolated) vs the batched, left-padded path, same run.
3. One SVR (GRPO) step with 8 generations: seconds per step and where the time goes
   (generation, reference-model forward, policy forward+backward, optimizer), mirroring what
   TRL's GRPOTrainer does per step with beta > 0.

Peak FLOPs: H100 SXM 989 TFLOPS, H200 989, A100 312 (dense bf16); ``--peak-tflops`` overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boxmed_model import prompts  # noqa: E402
from boxmed_model.rewards import format_reward_one, iou_reward_one  # noqa: E402
from boxmed_model.tiny import (  # noqa: E402
    TINY_CHAT_TEMPLATE, DEFAULT_CORPUS, image_only_processor_class, tiny_config, train_tokenizer)

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def qwen2vl_2b_config(tokenizer: Any) -> Any:
    """Qwen2-VL-2B: text hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960, vocab 151936,
    tied embeddings, mrope [16, 24, 24]; vision depth 32, dim 1280, 16 heads, MLP ratio 4,
    patch 14, merge 2."""
    from transformers import Qwen2VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = {"vocab_size": 151936, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
            "num_key_value_heads": 2, "intermediate_size": 8960, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id}
    vision = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def build(args: argparse.Namespace, attn: str) -> tuple[Any, Any]:
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = train_tokenizer([DEFAULT_CORPUS, *prompts.all_template_texts()], vocab_size=1024)
    config = tiny_config(len(tokenizer), tokenizer=tokenizer) if args.tiny else qwen2vl_2b_config(tokenizer)
    config._attn_implementation = attn
    with torch.device(args.device):
        model = Qwen2VLForConditionalGeneration(config).to(args.dtype)
    model.generation_config.eos_token_id = None  # random weights: never stop early, full-length reports
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=args.max_pixels)
    processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=TINY_CHAT_TEMPLATE)
    processor.tokenizer.padding_side = "left"
    return model, processor


def fake_image(args: argparse.Namespace, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = args.image_size
    return Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).convert("RGB")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_flops(args: argparse.Namespace) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if not args.device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value * 1e12
    return None


def train_flops_per_token(model: Any, seq_len: int) -> float:
    """6 N (dense matmuls, fwd + bwd) + 12 L d S (attention scores and values, fwd + bwd)."""
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = model.config.text_config
    return 6 * n_params + 12 * text.num_hidden_layers * text.hidden_size * seq_len


# --------------------------------------------------------------------------- 1. MCL step

def mcl_batch(processor: Any, args: argparse.Namespace, batch: int) -> dict[str, torch.Tensor]:
    target = " ".join(["Finding: Small left pleural effusion. -> Disease: Pleural Effusion -> Anatomy: left lung."]
                      * args.target_repeats)
    texts, images = [], []
    for i in range(batch):
        conversation = prompts.mcl_messages(f"<think>{target}</think><answer>{target}</answer>")
        texts.append(processor.apply_chat_template(conversation, tokenize=False))
        images.append([fake_image(args, i)])
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
    enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {k: v.to(args.device) for k, v in enc.items()}


def bench_mcl(args: argparse.Namespace, attn: str, batch: int, checkpointing: bool) -> dict[str, Any]:
    model, processor = build(args, attn)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device.startswith("cuda"))
    inputs = mcl_batch(processor, args, batch)
    tokens = int(inputs["attention_mask"].sum())
    seq_len = inputs["input_ids"].shape[1]
    times = []
    for step in range(args.warmup + args.steps):
        sync(args.device)
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args.device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = train_flops_per_token(model, seq_len) * tokens / seconds
    peak = peak_flops(args)
    result = {"attn": attn, "batch": batch, "checkpointing": checkpointing, "seq_len": seq_len, "tokens": tokens,
              "step_s": seconds, "tokens_per_s": tokens / seconds, "tflops": flops / 1e12,
              "mfu": flops / peak if peak else None,
              "max_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None}
    del model, optimizer
    _free(args)
    return result


def _free(args: argparse.Namespace) -> None:
    import gc

    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --------------------------------------------------------------------------- 2. generation

def generate_reports(model: Any, processor: Any, args: argparse.Namespace, n: int, batch: int) -> float:
    prompt = processor.apply_chat_template(prompts.report_messages(), add_generation_prompt=True, tokenize=False)
    sync(args.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, n, batch):
            size = min(batch, n - first)
            enc = processor(text=[prompt] * size, images=[[fake_image(args, first + i)] for i in range(size)],
                            return_tensors="pt", padding=True).to(args.device)
            out = model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=False)
            processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    sync(args.device)
    return time.perf_counter() - start


def bench_generation(args: argparse.Namespace, attn: str) -> dict[str, Any]:
    model, processor = build(args, attn)
    model.eval()
    generate_reports(model, processor, args, 2, 2)  # warm-up (kernels, allocator)
    single_n = min(args.single_sample, args.reports)
    single_s = generate_reports(model, processor, args, single_n, 1)
    batched_n = args.batched_sample or args.reports
    batched_s = generate_reports(model, processor, args, batched_n, args.gen_batch)
    per_report_single = single_s / single_n
    per_report_batched = batched_s / batched_n
    result = {"attn": attn, "reports": args.reports, "new_tokens": args.new_tokens, "gen_batch": args.gen_batch,
              "batch1_reports_measured": single_n, "batch1_s_per_report": per_report_single,
              "batch1_projected_total_s": per_report_single * args.reports,
              "batched_reports_measured": batched_n, "batched_s_per_report": per_report_batched,
              "batched_total_s": per_report_batched * args.reports,
              "batched_total_is_measured": batched_n == args.reports,
              "speedup": per_report_single / per_report_batched}
    del model
    _free(args)
    return result


# --------------------------------------------------------------------------- 3. SVR step

def bench_svr(args: argparse.Namespace, attn: str) -> dict[str, Any]:
    """One GRPO step the way TRL's GRPOTrainer runs it (beta > 0): sample G completions,
    score them, reference-model log-probs, policy forward + backward, optimizer step."""
    import copy

    policy, processor = build(args, attn)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=args.device.startswith("cuda"))
    prompt = processor.apply_chat_template(prompts.svr_messages("Small left pleural effusion"),
                                           add_generation_prompt=True, tokenize=False)
    g = args.num_generations
    enc = processor(text=[prompt] * g, images=[[fake_image(args, 0)]] * g, return_tensors="pt",
                    padding=True).to(args.device)
    timings: dict[str, list[float]] = {k: [] for k in ("generate", "reward", "reference_forward",
                                                       "policy_forward_backward", "optimizer", "total")}
    for step in range(args.warmup + args.steps):
        marks = {}
        sync(args.device)
        t0 = time.perf_counter()
        policy.eval()
        with torch.no_grad():
            out = policy.generate(**enc, max_new_tokens=args.svr_tokens, min_new_tokens=args.svr_tokens,
                                  do_sample=True, temperature=1.0)
        sync(args.device)
        marks["generate"] = time.perf_counter()
        texts = processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        rewards = [iou_reward_one(t, [[100, 100, 400, 400]]) + format_reward_one(t) for t in texts]
        marks["reward"] = time.perf_counter()
        full = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        if "mm_token_type_ids" in enc:  # completion tokens are text (type 0)
            full["mm_token_type_ids"] = torch.nn.functional.pad(enc["mm_token_type_ids"],
                                                                (0, out.shape[1] - enc["input_ids"].shape[1]))
        attention = torch.ones_like(out)
        completion = slice(enc["input_ids"].shape[1] - 1, -1)
        with torch.no_grad():
            ref_logits = reference(input_ids=out, attention_mask=attention, **full).logits[:, completion]
            ref_logp = torch.log_softmax(ref_logits.float(), -1).gather(-1, out[:, completion.start + 1:, None])
        sync(args.device)
        marks["reference_forward"] = time.perf_counter()
        policy.train()
        logits = policy(input_ids=out, attention_mask=attention, **full).logits[:, completion]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, out[:, completion.start + 1:, None])
        advantages = torch.tensor(rewards, device=args.device)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4)
        ratio_kl = torch.exp(ref_logp.clone() - logp) - (ref_logp.clone() - logp) - 1
        loss = (-(torch.exp(logp - logp.detach()) * advantages[:, None, None]) + 0.04 * ratio_kl).mean()
        loss.backward()
        sync(args.device)
        marks["policy_forward_backward"] = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args.device)
        marks["optimizer"] = time.perf_counter()
        if step >= args.warmup:
            previous = t0
            for key in ("generate", "reward", "reference_forward", "policy_forward_backward", "optimizer"):
                timings[key].append(marks[key] - previous)
                previous = marks[key]
            timings["total"].append(marks["optimizer"] - t0)
    result = {"attn": attn, "num_generations": g, "completion_tokens": args.svr_tokens,
              **{f"{k}_s": statistics.median(v) for k, v in timings.items()}}
    del policy, reference, optimizer
    _free(args)
    return result


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny model and small sizes")
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--only", choices=["mcl", "generation", "svr"], action="append")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--reports", type=int, default=3858)
    parser.add_argument("--gen-batch", type=int, default=256)
    parser.add_argument("--single-sample", type=int, default=24, help="batch-1 reports measured (extrapolated)")
    parser.add_argument("--batched-sample", type=int, default=0, help="0: generate all --reports batched")
    parser.add_argument("--mcl-batches", default="1,4,8")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    args.dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    # MIMIC-CXR-JPG frontal images are about 2500x3000: a quarter is about 625x750.
    args.image_size = (128, 128) if args.tiny else (625, 750)
    args.max_pixels = 224 * 224 if args.tiny else 1024 * 1024
    args.target_repeats = 2 if args.tiny else 6
    args.new_tokens = 8 if args.tiny else 128
    args.svr_tokens = 8 if args.tiny else 256
    args.num_generations = 2 if args.tiny else 8
    if args.tiny:
        args.reports, args.gen_batch, args.single_sample, args.steps, args.warmup = 8, 4, 4, 2, 1
        args.mcl_batches = "1,2"
    attns = ["sdpa"]
    if args.device == "cuda":
        try:
            import flash_attn  # noqa: F401

            attns.append("flash_attention_2")
        except ImportError:
            pass
    args.out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    results: dict[str, Any] = {"device": device_name, "torch": torch.__version__, "tiny": args.tiny,
                               "image_size_quarter_res": args.image_size, "mcl": [], "generation": [], "svr": []}
    todo = args.only or ["mcl", "generation", "svr"]
    if "mcl" in todo:
        for attn in attns:
            for batch in (int(b) for b in args.mcl_batches.split(",")):
                for checkpointing in ((False, True) if batch > 1 and args.device == "cuda" else (False,)):
                    try:
                        results["mcl"].append(bench_mcl(args, attn, batch, checkpointing))
                    except torch.OutOfMemoryError:
                        results["mcl"].append({"attn": attn, "batch": batch, "checkpointing": checkpointing,
                                               "error": "out of memory"})
                        _free(args)
                    print(json.dumps(results["mcl"][-1]), flush=True)
    if "generation" in todo:
        results["generation"].append(bench_generation(args, attns[-1]))
        print(json.dumps(results["generation"][-1]), flush=True)
    if "svr" in todo:
        results["svr"].append(bench_svr(args, attns[-1]))
        print(json.dumps(results["svr"][-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Device: {results['device']} (torch {results['torch']}){' — TINY smoke run' if results['tiny'] else ''}",
             "", "| MCL step | batch | grad ckpt | tokens/step | s/step | tokens/s | MFU |", "|---|---|---|---|---|---|---|"]
    for r in results["mcl"]:
        if "error" in r:
            lines.append(f"| {r['attn']} | {r['batch']} | {r['checkpointing']} | - | - | {r['error']} | - |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['attn']} | {r['batch']} | {r['checkpointing']} | {r['tokens']} | {r['step_s']:.3f} | "
                     f"{r['tokens_per_s']:.0f} | {mfu} |")
    for r in results["generation"]:
        lines += ["", f"Generation of {r['reports']} reports x {r['new_tokens']} new tokens ({r['attn']}): "
                  f"batch 1 {r['batch1_s_per_report']:.3f} s/report (projected {r['batch1_projected_total_s']:.0f} s), "
                  f"batch {r['gen_batch']} {r['batched_s_per_report']:.4f} s/report, total {r['batched_total_s']:.0f} s"
                  f"{'' if r['batched_total_is_measured'] else ' (projected)'}; speed-up {r['speedup']:.1f}x"]
    for r in results["svr"]:
        parts = ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in r.items() if k.endswith("_s") and k != "total_s")
        lines += ["", f"SVR step, {r['num_generations']} generations x {r['completion_tokens']} tokens: "
                  f"{r['total_s']:.2f} s/step ({parts})"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
