"""`benchmarks/bench_boxmedrl_gpu.py`: the full-size Qwen2-VL-2B architecture and processor it
builds offline, and its CPU `--tiny` smoke run through the real trainers and the plugin."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_boxmedrl_gpu.py"


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("bench_boxmedrl_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_full_size_architecture_and_processor_are_qwen2vl_2b(bench, tmp_path: Path) -> None:  # noqa: ANN001
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from boxmed_model import prompts
    from boxmed_model.data import load_image

    tokenizer = bench.stand_in_tokenizer([])
    config = bench.qwen2vl_2b_config(tokenizer)
    with torch.device("meta"):  # architecture only: no memory
        model = Qwen2VLForConditionalGeneration(config)
    n_lm, n_vis = bench.params(model)
    assert n_lm + n_vis == 2_208_985_600  # Qwen2-VL-2B-Instruct's parameter count
    assert n_vis == 665_271_296 and config.text_config.vocab_size == 151_936
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # a MIMIC-sized radiograph at the pipeline's 1/4 scale: the real processor's grid
    studies = bench.synthetic_studies(tmp_path, 1, bench.MIMIC_IMAGE, n_images=1)
    image, size = load_image(studies[0].image_paths[0], 0.25)
    assert size == bench.MIMIC_IMAGE and image.size == (636, 764)
    processor = bench.qwen2vl_2b_processor(tokenizer)
    text = processor.apply_chat_template(prompts.report_messages(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")  # Qwen2-VL's template
    encoded = processor(text=[text], images=[[image]], return_tensors="pt")
    assert encoded["image_grid_thw"].tolist() == [[1, 54, 46]]  # 764 -> 756 and 636 -> 644 px, 14 px patches
    assert int((encoded["input_ids"] == config.image_token_id).sum()) == 54 * 46 // 4  # 2x2 merge: 621 tokens


def test_tiny_smoke_run_uses_the_real_trainers_and_plugin(bench, tmp_path: Path) -> None:  # noqa: ANN001
    assert bench.main(["--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tiny"] and not results["gpu"]
    (mcl,) = results["mcl"]
    assert mcl["batch"] == 2 and mcl["tokens_per_s"] > 0 and mcl["peak_mem_gib"] > 0
    assert mcl["trl_num_tokens_last"] > 0  # logged by TRL's SFTTrainer itself
    assert mcl["trainable_params"] > 0 and mcl["image_patches_per_step"] > 0
    (svr,) = results["svr"]
    assert svr["completions_per_step"] == 2 and svr["step_s"] > 0 and math.isfinite(svr["trl_step_time_s"])
    (gen,) = results["generation"]
    assert gen["reports"] == 6 and gen["gen_batch"] == 3 and gen["speedup"] > 0
    assert mcl["mfu"] is None  # no GPU peak on CPU: not made up
    table = (tmp_path / "results.md").read_text()
    assert "no GPU" in table and "SFTTrainer" in table and "GRPOTrainer" in table and "boxmedrl plugin" in table
