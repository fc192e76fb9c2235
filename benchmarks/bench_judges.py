"""Judge throughput: batch 1 (how gemascore and a naive loop generate) vs the batched path of
``boxmed_eval.judges.hf.HFJudge`` (length-sorted batches, left padding, greedy), same process.

The model has the GREEN judge's architecture (Llama-2-7B shape: 32 layers, hidden 4096, 32
heads, MLP 11008, vocab 32000) with random weights in fp16 (``--dtype bf16`` for bfloat16), so
no download is needed. Prompts are GREEN's real prompt (``make_green_prompt``) around synthetic
reports of a realistic length; the tokenizer is a byte-level BPE trained here on those prompts,
sized so a prompt has about as many tokens as with the Llama-2 tokenizer (~4 characters per
token). Random weights practically never emit EOS, so every reply runs to ``--new-tokens``
(a typical GREEN reply length); the per-sample figures are therefore for full-length replies.

    python benchmarks/bench_judges.py                      # GPU: 7B shape, timed subsets
    python benchmarks/bench_judges.py --tiny --device cpu  # any machine: a tiny model, seconds

Anchor: RadEval reports ~2.2 s per sample for GREEN; goal here <= 0.2 s per sample on one
H100-class GPU. The JSON written to ``--out`` records the device name with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

SENTENCES = [
    "The heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
    "There is mild cardiomegaly.", "The lungs are clear without focal consolidation.",
    "No pleural effusion or pneumothorax is seen.", "There is a small left pleural effusion.",
    "Mild pulmonary vascular congestion is present.", "Bibasilar atelectasis is noted.",
    "There is patchy opacity in the right lower lobe concerning for pneumonia.",
    "Degenerative changes are seen in the thoracic spine.", "No acute osseous abnormality.",
    "Calcified granuloma in the left upper lobe.", "The trachea is midline.",
    "Interval improvement of the right basilar opacity compared to the prior study.",
    "A right internal jugular central venous catheter terminates in the superior vena cava.",
    "Hyperexpanded lungs consistent with chronic obstructive pulmonary disease.",
    "There is no evidence of pulmonary edema.", "Surgical clips are noted in the right upper quadrant.",
    "Low lung volumes with crowding of the bronchovascular markings.",
    "Stable mild enlargement of the cardiac silhouette.",
]


def synthetic_report(rng: random.Random, words: int) -> str:
    parts: list[str] = []
    while sum(len(p.split()) for p in parts) < words:
        parts.append(rng.choice(SENTENCES))
    return " ".join(parts)


def build_prompts(n: int, words: int, seed: int) -> list[str]:
    from boxmed_eval.metrics.green import make_green_prompt

    rng = random.Random(seed)
    # varied lengths around the mean, as real reports are
    return [make_green_prompt(synthetic_report(rng, max(8, int(rng.gauss(words, words / 3)))),
                              synthetic_report(rng, max(8, int(rng.gauss(words, words / 3))))) for _ in range(n)]


def build_tokenizer(prompts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(prompts[:200], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                             special_tokens=[("<s>", tokenizer.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(tiny: bool, vocab: int, device: str, dtype_name: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    if device == "cpu" and dtype != torch.float32:
        dtype = torch.float32
    if tiny:
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)
    else:  # Llama-2-7B, the GREEN-radllama2-7b architecture
        config = LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                             rms_norm_eps=1e-5)
    config.bos_token_id, config.eos_token_id = 1, 2
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def time_path(judge: Any, prompts: list[str], new_tokens: int) -> dict[str, float]:
    import torch

    from boxmed_eval.judges.base import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, prompt_format="green")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    replies = dict(judge.generate(prompts, settings))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert len(replies) == len(prompts)
    return {"pairs": len(prompts), "seconds": round(seconds, 3), "s_per_sample": round(seconds / len(prompts), 4),
            "batches": judge.batches_run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama (runs on CPU in seconds)")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--pairs", type=int, default=3858, help="corpus size the estimate is for")
    parser.add_argument("--batched-subset", type=int, default=512, help="pairs timed on the batched path")
    parser.add_argument("--single-subset", type=int, default=16, help="pairs timed at batch 1")
    parser.add_argument("--batch-sizes", default="32,64,128", help="batched path sizes to time (comma list)")
    parser.add_argument("--new-tokens", type=int, default=300, help="reply length (GREEN replies: ~200-400)")
    parser.add_argument("--report-words", type=int, default=55, help="mean words per synthetic report")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--bpe-vocab", type=int, default=700,
                        help="size of the trained BPE (sets tokens per prompt; ~700 gives ~700 tokens, Llama-2-like)")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)

    import torch

    from boxmed_eval.judges.hf import HFJudge

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.batched_subset, args.single_subset = min(args.batched_subset, 16), min(args.single_subset, 4)
        args.new_tokens, args.batch_sizes = min(args.new_tokens, 16), "4,8"
    prompts = build_prompts(max(args.batched_subset, args.single_subset), args.report_words, seed=0)
    tokenizer = build_tokenizer(prompts, args.bpe_vocab)
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    vocab = max(args.vocab if not args.tiny else 0, len(tokenizer))
    t0 = time.perf_counter()
    model = build_model(args.tiny, vocab, device, args.dtype)
    build_s = time.perf_counter() - t0
    device_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    results: dict[str, Any] = {
        "device": device_name, "torch": torch.__version__, "dtype": str(next(model.parameters()).dtype),
        "model": "tiny Llama" if args.tiny else "Llama-2-7B shape, random weights",
        "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1), "prompt_tokens_max": max(lengths),
        "new_tokens": args.new_tokens, "model_build_s": round(build_s, 1), "runs": {},
    }
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)

    # warm-up (CUDA kernels, allocator)
    warm = HFJudge.from_objects(model, tokenizer, name="bench", batch_size=2)
    time_path(warm, prompts[:2], 4)

    single = HFJudge.from_objects(model, tokenizer, name="bench", batch_size=1)
    results["runs"]["batch_1"] = time_path(single, prompts[:args.single_subset], args.new_tokens)
    print("batch 1:", json.dumps(results["runs"]["batch_1"]), flush=True)
    for size in [int(s) for s in args.batch_sizes.split(",") if s.strip()]:
        judge = HFJudge.from_objects(model, tokenizer, name="bench", batch_size=size)
        try:
            run = time_path(judge, prompts[:args.batched_subset], args.new_tokens)
        except Exception as exc:  # e.g. out of memory at the largest size
            run = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if device.startswith("cuda"):
            run["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            torch.cuda.reset_peak_memory_stats()
        results["runs"][f"batch_{size}"] = run
        print(f"batch {size}:", json.dumps(run), flush=True)
    best = min((r["s_per_sample"], name) for name, r in results["runs"].items() if "s_per_sample" in r)
    results["best"] = {"path": best[1], "s_per_sample": best[0],
                       "estimated_minutes_for_pairs": round(best[0] * args.pairs / 60, 1), "pairs": args.pairs,
                       "speedup_vs_batch_1": round(results["runs"]["batch_1"]["s_per_sample"] / best[0], 1)}
    print(json.dumps(results["best"]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
