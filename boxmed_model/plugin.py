"""The ``boxmedrl`` model plugin and its training command.

Register (pyproject.toml)::

    [project.entry-points."boxmed_eval.models"]
    boxmedrl = "boxmed_model.plugin:BoxMedRL"

Generation::

    boxmed-eval run --model boxmedrl --dataset mimic --model-arg weights=runs/boxmedrl
    boxmed-eval run --model boxmedrl --dataset demo --model-arg weights=runs/demo --model-arg mode=grounded

``weights`` is the output directory of ``boxmed-eval train boxmedrl`` (it holds
``boxmedrl.json``: base + phase-I weights + adapter), or any Qwen2-VL model directory / HF
hub id (from the local HF cache, e.g. ``Qwen/Qwen2-VL-2B-Instruct``, the documented base),
or ``tiny`` / ``small`` (an untrained preset model: tests, the untrained demo baseline).

Modes: ``report`` (default) writes the findings with the phase-II model (base + phase I +
adapter). ``grounded`` also returns, with the adapter switched off (the phase-I model that
learned them): the MCL reasoning chains (``Prediction.reasoning``) and, for every sentence of
the report, the SVR box (``Prediction.boxes``, pixels of the original first image, with the
sentence as phrase and the chain's disease/region).

Batched generation with left padding; greedy decoding.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import click

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.plugins import ReportGenerator, RunContext
from boxmed_eval.records import Box, Prediction, Study
from boxmed_model import cot, knowledge, prompts
from boxmed_model.rewards import answer_text, from_qwen, parse_boxes, think_text

log = logging.getLogger(__name__)


def resolve_weights(weights: str) -> dict[str, Any]:
    """What to load for ``weights``: ``{"base", "phase1", "adapter", "adapter_kind", "manifest"}``."""
    from boxmed_model.tiny import PRESETS, resolve_base
    from boxmed_model.train import MANIFEST, read_manifest

    if weights in PRESETS:
        path = resolve_base(weights)
        return {"base": path, "phase1": None, "adapter": None, "adapter_kind": None, "manifest": None}
    root = Path(weights).expanduser()
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root)

        def where(value: str | None) -> str | None:
            if not value:
                return None
            candidate = root / value
            return str(candidate) if candidate.exists() else value  # relative to the run dir, or an HF id

        return {"base": where(manifest.get("base")), "phase1": where(manifest.get("phase1")),
                "adapter": where(manifest.get("adapter")), "adapter_kind": manifest.get("adapter_kind"),
                "manifest": str(root / MANIFEST)}
    if root.exists() and not (root / "config.json").is_file():
        raise MissingResourceError(f"{root} holds neither {MANIFEST} (a `boxmed-eval train boxmedrl` output) nor a "
                                   "model config.json: pass weights=DIR of a trained run, a Qwen2-VL directory or an HF id")
    return {"base": weights, "phase1": None, "adapter": None, "adapter_kind": None, "manifest": None}


class BoxMedRL(ReportGenerator):
    description = "BoxMed-RL: Qwen2-VL with MCL + SVR pretraining and a LoRA adapter (paper reference model)"
    needs = ("weights=DIR from `boxmed-eval train boxmedrl` (or a Qwen2-VL dir / HF id such as "
             "Qwen/Qwen2-VL-2B-Instruct in the local HF cache, or `tiny`); torch, transformers, peft")
    arguments: ClassVar[dict[str, str]] = {
        "weights": "trained run directory, Qwen2-VL model dir/HF id, or `tiny`/`small` (required)",
        "mode": "report (default) | grounded (adds reasoning chains and boxes)",
        "batch_size": "studies per generate() call inside the plugin (default 8)",
        "max_new_tokens": "report length cap in tokens (default 128)",
        "max_reasoning_tokens": "cap for the grounded-mode reasoning and box answers (default 256)",
        "max_boxes": "grounded mode: at most this many report sentences are located (default 8)",
        "device": "auto (default: cuda when available) | cpu | cuda | cuda:N",
        "image_scale": "image resize factor before the processor (default 0.25, as in training)",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "weights" not in kwargs:
            raise BoxmedError("model 'boxmedrl' needs --model-arg weights=DIR (a `boxmed-eval train boxmedrl` output, "
                              "a Qwen2-VL model dir / HF id, or `tiny`)")
        self.mode = str(kwargs.get("mode", "report"))
        if self.mode not in ("report", "grounded"):
            raise BoxmedError(f"--model-arg mode={self.mode!r}: use report or grounded")
        self.batch_size = int(kwargs.get("batch_size", 8))
        self.max_new_tokens = int(kwargs.get("max_new_tokens", 128))
        self.max_reasoning_tokens = int(kwargs.get("max_reasoning_tokens", 256))
        self.max_boxes = int(kwargs.get("max_boxes", 8))
        self.image_scale = float(kwargs.get("image_scale", 0.25))
        self.device_arg = str(kwargs.get("device", "auto"))
        self.model: Any = None
        self.processor: Any = None
        self.resolved: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading

    def setup(self, context: RunContext | None = None) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText

        from boxmed_model.tiny import load_processor

        self.resolved = resolve_weights(str(self.kwargs["weights"]))
        device = self.device_arg
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        full_model_path = self.resolved["phase1"] or self.resolved["base"]
        if self.resolved["adapter"] and self.resolved["adapter_kind"] == "full":
            full_model_path = self.resolved["adapter"]  # Table-5 rows without adapter: a full model
        try:
            model = AutoModelForImageTextToText.from_pretrained(full_model_path, dtype=dtype)
        except OSError as exc:
            raise MissingResourceError(f"cannot load model weights from {full_model_path!r} ({exc}); for the HF "
                                       "base run `huggingface-cli download Qwen/Qwen2-VL-2B-Instruct` first") from None
        if self.resolved["adapter"] and self.resolved["adapter_kind"] == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.resolved["adapter"])
        self.model = model.to(device).eval()
        self.device = device
        self.processor = load_processor(full_model_path)

    def provenance(self) -> dict[str, Any]:
        return {"weights": str(self.kwargs.get("weights")), "mode": self.mode, **{k: v for k, v in self.resolved.items()}}

    # ------------------------------------------------------------------ generation

    def _generate(self, conversations: list[list[dict[str, Any]]], images: list[Any], max_new_tokens: int,
                  *, use_adapter: bool = True) -> list[str]:
        import torch

        processor = self.processor
        processor.tokenizer.padding_side = "left"  # batched decoding: prompts end at the same column
        texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        outputs: list[str] = []
        disable = getattr(self.model, "disable_adapter", None)
        for start in range(0, len(texts), self.batch_size):
            batch = processor(text=texts[start:start + self.batch_size],
                              images=[[im] for im in images[start:start + self.batch_size]],
                              return_tensors="pt", padding=True).to(self.device)
            context = disable() if (not use_adapter and disable is not None) else nullcontext()
            with torch.inference_mode(), context:
                generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=processor.tokenizer.pad_token_id)
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
        return outputs

    def generate(self, studies: list[Study]) -> list[Prediction]:
        from boxmed_model.data import load_image

        self.setup()
        loaded = [load_image(s.image_paths[0], self.image_scale) for s in studies]
        images = [image for image, _ in loaded]
        raw = self._generate([prompts.report_messages() for _ in studies], images, self.max_new_tokens)
        # A phase-I-only model (no adapter) answers in the CoT format: keep the <answer> part.
        reports = [answer_text(text).strip() if "<answer>" in text else text for text in raw]
        predictions = [Prediction(id=s.id, report=r) for s, r in zip(studies, reports)]
        if self.mode == "grounded":
            self._ground(studies, loaded, predictions)
        return predictions

    def _ground(self, studies: list[Study], loaded: list[tuple[Any, tuple[int, int]]],
                predictions: list[Prediction]) -> None:
        images = [image for image, _ in loaded]
        reasoning = self._generate([prompts.mcl_messages() for _ in studies], images, self.max_reasoning_tokens,
                                   use_adapter=False)
        queries: list[tuple[int, str]] = []
        for index, prediction in enumerate(predictions):
            prediction.reasoning = think_text(reasoning[index]) or reasoning[index]
            for sentence in cot.split_sentences(prediction.report)[: self.max_boxes]:
                queries.append((index, sentence))
        if not queries:
            return
        answers = self._generate([prompts.svr_messages(sentence) for _, sentence in queries],
                                 [images[i] for i, _ in queries], self.max_reasoning_tokens, use_adapter=False)
        labels = knowledge.label_sentences([sentence for _, sentence in queries])
        for (index, sentence), answer, label in zip(queries, answers, labels):
            found = parse_boxes(answer_text(answer))
            if not found:
                continue
            width, height = loaded[index][1]  # boxes go back to ORIGINAL image pixels
            x1, y1, x2, y2 = from_qwen(found[0], width, height)
            diseases = [d for d in cot.diseases_from_labels(label) if not d.endswith(")")]
            predictions[index].boxes.append(Box(x1, y1, x2, y2, phrase=sentence,
                                                category=diseases[0] if diseases else "",
                                                region=knowledge.regions_for(sentence)[0],
                                                image_width=width, image_height=height, image_index=0))


# ---------------------------------------------------------------------- training command

def _load_studies(name: str, data_root: str | None, split: str, limit: int | None) -> list[Study]:
    from boxmed_eval.datasets.base import get_dataset

    studies = get_dataset(name, data_root).load(split)
    return studies[:limit] if limit else studies


@click.command("boxmedrl")
@click.option("--stage", type=click.Choice(["mcl", "svr", "adapter", "all"]), default="all", show_default=True,
              help="Phase I.1 MCL, phase I.2 SVR, phase II adapter, or all in order (ablations honoured).")
@click.option("--base", required=True, help="`tiny` / `small` (random small Qwen2-VL presets, CPU), a Qwen2-VL model directory, or an "
              "HF id in the local cache (documented: Qwen/Qwen2-VL-2B-Instruct).")
@click.option("--dataset", required=True, help="Report dataset for MCL and the adapter (e.g. mimic, iu_xray, demo).")
@click.option("--data-root", default=None, help="Data root of --dataset.")
@click.option("--svr-dataset", default=None, help="Dataset with finding boxes for SVR (ms_cxr, latte_cxr, demo); "
              "default: --dataset.")
@click.option("--svr-data-root", default=None, help="Data root of --svr-dataset (default: --data-root).")
@click.option("--split", default="train", show_default=True)
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Run directory (resumable).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="TOML config (see boxmed_model.config).")
@click.option("--ablation", type=click.Choice(["full", "wo_mcl_svr", "wo_svr", "wo_mcl"]), default=None,
              help="Paper Table 4 row (overrides the config).")
@click.option("--strategy", type=click.Choice(["adapter", "vision_tower", "projector", "vision_tower+adapter",
                                               "projector+adapter"]), default=None,
              help="Paper Table 5 row (overrides the config).")
@click.option("--limit", type=int, default=None, help="Use the first N studies of each dataset (quick runs).")
@click.option("--max-steps", type=int, default=None, help="Cap every stage at N optimizer steps (quick runs).")
@click.option("--num-generations", type=int, default=None, help="SVR generations per prompt (default 8).")
def train_command(stage: str, base: str, dataset: str, data_root: str | None, svr_dataset: str | None,
                  svr_data_root: str | None, split: str, output: str, config_file: str | None, ablation: str | None,
                  strategy: str | None, limit: int | None, max_steps: int | None, num_generations: int | None) -> None:
    """Train BoxMed-RL: MCL (SFT on CoT chains) -> SVR (GRPO, IoU + format reward) -> LoRA adapter.

    Several GPUs/nodes: prefix with `accelerate launch [--num_processes N ...] $(which boxmed-eval)`.
    """
    import json
    from dataclasses import replace

    from boxmed_model.config import PipelineConfig
    from boxmed_model.tiny import PRESETS, build_tiny_base
    from boxmed_model.train import run_pipeline

    cfg = PipelineConfig.from_toml(config_file) if config_file else PipelineConfig()
    if ablation:
        cfg = replace(cfg, ablation=ablation)
    if strategy:
        cfg = replace(cfg, strategy=strategy)
    if max_steps is not None:
        cfg = replace(cfg, mcl=replace(cfg.mcl, max_steps=max_steps), svr=replace(cfg.svr, max_steps=max_steps),
                      adapter=replace(cfg.adapter, max_steps=max_steps))
    if num_generations is not None:
        cfg = replace(cfg, svr=replace(cfg.svr, num_generations=num_generations))
    needs_reports = stage in ("mcl", "adapter", "all")
    needs_grounding = (stage == "svr" or (stage == "all" and cfg.use_svr)
                       or (stage in ("mcl", "all") and cfg.use_mcl and cfg.mcl.grounding_warmup))
    reports = _load_studies(dataset, data_root, split, limit) if needs_reports else None
    grounding = None
    if needs_grounding:
        grounding = (_load_studies(svr_dataset, svr_data_root or data_root, split, limit) if svr_dataset
                     else reports if reports is not None else _load_studies(dataset, data_root, split, limit))
    out = Path(output)
    base_path = base
    if base in PRESETS:
        base_path = str(out / f"{base}_base")
        if not (Path(base_path) / "config.json").is_file():
            texts = [s.findings for s in (reports or grounding or [])]
            build_tiny_base(base_path, texts, preset=base)
            click.echo(f"built the {base} base preset in {base_path}")
    manifest = run_pipeline(stage, base_path, cfg, out, report_studies=reports, grounding_studies=grounding,
                            base_label=base)
    click.echo(json.dumps({name: entry.get("summary") for name, entry in manifest["stages"].items()}, indent=2))
    click.echo(f"weights: {out}  (boxmed-eval run --model boxmedrl --model-arg weights={out} ...)")


BoxMedRL.training_command = train_command
