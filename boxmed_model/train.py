"""Stage runners of BoxMed-RL (paper Algorithm 1) on TRL / transformers / peft.

Output directory layout (what :class:`boxmed_model.plugin.BoxMedRL` loads)::

    OUT/boxmedrl.json      manifest: base, phase-I weights, adapter, config, per-stage summaries
    OUT/mcl/final/         phase I.1 weights (full model + processor)     [SFTTrainer]
    OUT/svr/final/         phase I.2 weights (full model + processor)     [GRPOTrainer]
    OUT/adapter/final/     phase II: a peft LoRA adapter (or, for the Table-5 rows without an
                           adapter, the full model with the vision tower/projector trained)
    OUT/<stage>/checkpoint-N/   trainer checkpoints; a rerun resumes from the latest one
    OUT/<stage>/log_history.json  the trainer's logged losses / rewards

A stage whose ``final/`` directory exists is skipped on rerun (delete it to retrain). Each
stage's manifest entry records the chain that produced it (``lineage``, e.g. mcl -> svr ->
adapter), the adapter's ``strategy`` and the datasets it saw; reusing an output with another
``--ablation``/``--strategy``/data that would skip a stage trained differently is refused.

Several GPUs or nodes: the trainers are accelerate-aware, so the same command scales with
``accelerate launch``, e.g. 8 GPUs on one node (DeepSpeed ZeRO-3 as in Visual-RFT is an
``accelerate config`` choice)::

    accelerate launch --num_processes 8 $(which boxmed-eval) train boxmedrl --stage all \\
        --base Qwen/Qwen2-VL-2B-Instruct --pretrain-dataset ms_cxr --pretrain-dataset latte_cxr \\
        --dataset mimic --data-root /data/mimic-cxr-jpg --dataset-option ms_cxr.reports=auto \\
        --output runs/boxmedrl

    # two nodes: add --num_machines 2 --machine_rank R --main_process_ip HOST --main_process_port 29500
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError
from boxmed_eval.records import Study, atomic_write_json
from boxmed_model import data as stage_data
from boxmed_model.config import PipelineConfig
from boxmed_model.rewards import format_reward, iou_reward
from boxmed_model.tiny import LOCAL_ONLY, load_processor
from boxmed_model.versions import check_training_versions

check_training_versions()

log = logging.getLogger(__name__)

MANIFEST = "boxmedrl.json"
STAGES = ("mcl", "svr", "adapter")


@dataclass
class StageResult:
    stage: str
    path: str  # the stage's final weights
    skipped: bool = False
    summary: dict[str, Any] | None = None


# ------------------------------------------------------------------------- helpers

def _use_bf16(cfg: PipelineConfig) -> bool:
    import torch

    if cfg.bf16 == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return str(cfg.bf16).lower() in {"true", "1", "yes", "on"}


def _use_gradient_checkpointing(cfg: PipelineConfig) -> bool:
    import torch

    if cfg.gradient_checkpointing == "auto":
        return bool(torch.cuda.is_available())
    return str(cfg.gradient_checkpointing).lower() in {"true", "1", "yes", "on"}


def _checkpointing_field() -> str:
    """transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def _common_args(cfg: PipelineConfig, out: Path) -> dict[str, Any]:
    import torch

    return {
        "output_dir": str(out), "logging_steps": cfg.logging_steps, "save_strategy": "steps",
        "save_steps": cfg.save_steps, "save_total_limit": cfg.save_total_limit, "report_to": cfg.report_to,
        # bf16=True is autocast compute over the fp32 master weights load_model gives (never bf16 params)
        "bf16": _use_bf16(cfg), _checkpointing_field(): _use_gradient_checkpointing(cfg), "seed": cfg.seed,
        "disable_tqdm": False, "dataloader_num_workers": _num_workers(),
        "dataloader_pin_memory": torch.cuda.is_available(),
        # bf16 without a GPU (tests; CPU autocast): transformers wants use_cpu said explicitly
        "use_cpu": _use_bf16(cfg) and not torch.cuda.is_available(),
        # rows are lazy (image paths): the dataset's transform needs every column it stores
        "remove_unused_columns": False,
    }


def _num_workers() -> int:
    """DataLoader workers that decode/resize images (data.StageTransform) off the training
    process: on GPU up to 4 (``BOXMEDRL_DATA_WORKERS`` overrides); 0 on CPU (tests, demo)."""
    import torch

    env = os.environ.get("BOXMEDRL_DATA_WORKERS")
    if env is not None:
        return int(env)
    if not torch.cuda.is_available():
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def load_model(path: str, cfg: PipelineConfig | None = None) -> Any:
    """The model in fp32 whatever ``cfg.bf16`` says. bf16 is autocast compute (TrainingArguments
    ``bf16=True``) over fp32 master weights: AdamW steps at SVR's lr 1e-6 are below bf16's
    rounding step, so bf16 parameters would barely move. Checkpoints are saved fp32 too, so
    each stage hands the next the master weights (``tests/test_boxmed_precision.py``)."""
    import torch
    from transformers import AutoModelForImageTextToText

    del cfg  # kept for callers; precision no longer depends on it
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, **LOCAL_ONLY)


def _resume_point(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not out.is_dir():
        return None
    return get_last_checkpoint(str(out))


def _finish(trainer: Any, processor: Any, out: Path, stage: str) -> StageResult:
    final = out / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    history = trainer.state.log_history
    atomic_write_json(out / "log_history.json", history)
    return StageResult(stage, str(final), summary=summarise_history(stage, history))


def summarise_history(stage: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """First/last logged loss (MCL, adapter) or mean reward (SVR) of a stage."""
    key = "reward" if stage == "svr" else "loss"
    values = [row[key] for row in history if key in row]
    summary: dict[str, Any] = {"logged_steps": len(values)}
    if values:
        summary[f"first_{key}"] = float(values[0])
        summary[f"last_{key}"] = float(values[-1])
    if stage == "svr":  # R_IoU's within-group spread: 0 means SVR had no IoU signal (rewards.iou_reward)
        stds = [row["iou_group_std"] for row in history if "iou_group_std" in row]
        if stds:
            summary["first_iou_group_std"] = float(stds[0])
            summary["last_iou_group_std"] = float(stds[-1])
    for row in history:
        if "train_runtime" in row:
            summary["train_runtime_s"] = float(row["train_runtime"])
    return summary


def _sft_args(cfg: PipelineConfig, stage_cfg: Any, out: Path) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        **_common_args(cfg, out),
        learning_rate=stage_cfg.learning_rate, num_train_epochs=stage_cfg.epochs, max_steps=stage_cfg.max_steps,
        lr_scheduler_type=stage_cfg.lr_scheduler, per_device_train_batch_size=stage_cfg.per_device_batch_size,
        gradient_accumulation_steps=stage_cfg.gradient_accumulation_steps,
        optim=getattr(stage_cfg, "optimizer", "adamw_torch"),
        weight_decay=getattr(stage_cfg, "weight_decay", 0.0), warmup_steps=getattr(stage_cfg, "warmup_steps", 0),
        max_length=None,  # never cut image tokens
        completion_only_loss=True,  # Eq. 1 / Eq. 12: loss on the target tokens given image and prompt
    )


# ------------------------------------------------------------------------- stages

def build_mcl_trainer(start: str, studies: list[Study], cfg: PipelineConfig, out: Path, *,
                      grounding_studies: list[Study] | None = None) -> tuple[Any, Any]:
    """The MCL ``SFTTrainer`` (and processor) that :func:`run_mcl` trains into stage directory
    ``out``; ``benchmarks/bench_boxmedrl_gpu.py`` times this very trainer."""
    from trl import SFTTrainer

    processor = load_processor(start)
    rows = stage_data.mcl_rows(studies, cfg.image_scale)  # boxed chains already come as SVR-format rows
    if cfg.mcl.grounding_warmup and grounding_studies is not None and grounding_studies is not studies:
        rows += stage_data.grounding_warmup_rows(grounding_studies, cfg.image_scale)
    dataset = stage_data.to_dataset(rows, cfg.image_scale)
    model = load_model(start, cfg)
    if cfg.mcl.freeze_vision:
        freeze_vision(model)
    trainer = SFTTrainer(model=model, args=_sft_args(cfg, cfg.mcl, out), train_dataset=dataset,
                         processing_class=processor)
    return trainer, processor


def run_mcl(start: str, studies: list[Study], cfg: PipelineConfig, out_dir: str | os.PathLike[str], *,
            grounding_studies: list[Study] | None = None) -> StageResult:
    """Phase I.1: SFT of the whole model on the CoT targets (Eq. 1); with
    ``cfg.mcl.grounding_warmup`` also on SVR-format answers of ``grounding_studies`` (default
    ``studies``; a demo choice, see :class:`boxmed_model.config.MCLConfig`)."""
    out = Path(out_dir) / "mcl"
    if (out / "final" / "config.json").is_file():
        return StageResult("mcl", str(out / "final"), skipped=True)
    trainer, processor = build_mcl_trainer(start, studies, cfg, out, grounding_studies=grounding_studies)
    trainer.train(resume_from_checkpoint=_resume_point(out))
    return _finish(trainer, processor, out, "mcl")


def build_svr_trainer(start: str, studies: list[Study], cfg: PipelineConfig, out: Path) -> tuple[Any, Any]:
    """The SVR ``GRPOTrainer`` (and processor) that :func:`run_svr` trains into ``out``."""
    from trl import GRPOConfig, GRPOTrainer

    svr = cfg.svr
    processor = load_processor(start)
    dataset = stage_data.to_dataset(stage_data.svr_rows(studies, cfg.image_scale), cfg.image_scale)
    args = GRPOConfig(
        **_common_args(cfg, out),
        learning_rate=svr.learning_rate, num_train_epochs=svr.epochs, max_steps=svr.max_steps,
        lr_scheduler_type=svr.lr_scheduler, beta=svr.beta, loss_type=svr.loss_type,
        num_generations=svr.num_generations, temperature=svr.temperature,
        max_completion_length=svr.max_completion_length,
        per_device_train_batch_size=svr.per_device_batch_size or svr.num_generations,
        gradient_accumulation_steps=svr.gradient_accumulation_steps,
        reward_weights=[1.0, 1.0],  # Eq. 9: plain sum
    )
    # The policy is given by path: with beta > 0 TRL rebuilds the frozen reference from it.
    model = load_model(start, cfg)
    if svr.freeze_vision:
        freeze_vision(model)
    model.name_or_path = start
    model.config._name_or_path = start
    trainer = GRPOTrainer(model=model, reward_funcs=[iou_reward, format_reward], args=args, train_dataset=dataset,
                          processing_class=processor)
    return trainer, processor


def run_svr(start: str, studies: list[Study], cfg: PipelineConfig, out_dir: str | os.PathLike[str]) -> StageResult:
    """Phase I.2: GRPO with R = R_IoU + R_format (Eq. 9), KL to the frozen start model."""
    out = Path(out_dir) / "svr"
    if (out / "final" / "config.json").is_file():
        return StageResult("svr", str(out / "final"), skipped=True)
    trainer, processor = build_svr_trainer(start, studies, cfg, out)
    trainer.train(resume_from_checkpoint=_resume_point(out))
    return _finish(trainer, processor, out, "svr")


def language_model_lora_regex(target_modules: tuple[str, ...]) -> str:
    """peft ``target_modules`` regex that matches the projections of the language model only."""
    return rf".*language_model.*\.({'|'.join(map(re.escape, target_modules))})$"


def prepare_adapter_model(model: Any, cfg: PipelineConfig) -> Any:
    """Freeze the phase-I model; add the LoRA adapter on the language model (rank 8) and/or
    unfreeze the vision tower / projector per the Table-5 strategy."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    visual = _visual(model)
    if cfg.use_adapter:
        from peft import LoraConfig, get_peft_model

        modules_to_save: list[str] = []
        if cfg.train_projector:
            modules_to_save.append("merger")
        if cfg.train_vision_tower:
            # peft wraps modules, not ModuleLists: name each vision block
            modules_to_save += ["patch_embed", *(f"visual.blocks.{i}" for i in range(len(visual.blocks)))]
        lora = LoraConfig(r=cfg.adapter.lora_r, lora_alpha=cfg.adapter.lora_alpha, lora_dropout=cfg.adapter.lora_dropout,
                          target_modules=language_model_lora_regex(cfg.adapter.lora_target_modules),
                          modules_to_save=modules_to_save or None, task_type="CAUSAL_LM")
        return get_peft_model(model, lora)
    if cfg.train_projector:
        for parameter in visual.merger.parameters():
            parameter.requires_grad = True
    if cfg.train_vision_tower:
        for name, parameter in visual.named_parameters():
            if not name.startswith("merger."):
                parameter.requires_grad = True
    return model


def freeze_vision(model: Any) -> None:
    """Keep the vision tower and projector (``model.visual``) at their starting weights
    (``[mcl]`` / ``[svr]`` ``freeze_vision``)."""
    for parameter in _visual(model).parameters():
        parameter.requires_grad = False


def _visual(model: Any) -> Any:
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    if visual is None:
        raise BoxmedError(f"{type(model).__name__} has no vision tower `visual`: not a Qwen2-VL model")
    return visual


def build_adapter_trainer(start: str, studies: list[Study], cfg: PipelineConfig, out: Path) -> tuple[Any, Any]:
    """The phase-II ``SFTTrainer`` (and processor) that :func:`run_adapter` trains into ``out``."""
    from trl import SFTTrainer

    processor = load_processor(start)
    dataset = stage_data.to_dataset(stage_data.adapter_rows(studies, cfg.image_scale), cfg.image_scale)
    model = prepare_adapter_model(load_model(start, cfg), cfg)
    args = _sft_args(cfg, cfg.adapter, out)
    if cfg.use_adapter and _use_gradient_checkpointing(cfg):
        setattr(args, f"{_checkpointing_field()}_kwargs", {"use_reentrant": False})  # frozen inputs + checkpointing
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    return trainer, processor


def run_adapter(start: str, studies: list[Study], cfg: PipelineConfig, out_dir: str | os.PathLike[str]) -> StageResult:
    """Phase II: image -> findings SFT (Eq. 12) training only the adapter (or the Table-5 parts)."""
    out = Path(out_dir) / "adapter"
    if (out / "final").is_dir() and any((out / "final").glob("*.json")):
        return StageResult("adapter", str(out / "final"), skipped=True)
    trainer, processor = build_adapter_trainer(start, studies, cfg, out)
    trainer.train(resume_from_checkpoint=_resume_point(out))
    return _finish(trainer, processor, out, "adapter")


# ------------------------------------------------------------------------- pipeline

def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def ablation_of(lineage: list[str] | None) -> str | None:
    """The Table-4 row a stage chain belongs to: ["mcl", "svr", "adapter"] -> "full"."""
    if not lineage:
        return None
    from boxmed_model.config import ABLATIONS

    used = (("mcl" in lineage), ("svr" in lineage))
    return next((name for name, flags in ABLATIONS.items() if flags == used), None)


def _relative(path: str, out: Path, root: Path | None = None) -> str:
    """Paths inside the run directory are stored relative to it (the directory can move), and
    so are paths inside ``root``, a directory around it that moves with it (``reproduce``'s
    ``--out``: the shared base and the stages shared from a sibling row, e.g.
    ``../full/mcl/final``); others (an HF id, a base elsewhere) as given."""
    p = Path(path)
    if not p.exists():
        return path
    resolved = p.resolve()
    for anchor in (out, root):
        if anchor is not None and resolved.is_relative_to(Path(anchor).resolve()):
            return os.path.relpath(resolved, out.resolve())
    return str(resolved)


def _stored_lineage(manifest: dict[str, Any], name: str) -> list[str]:
    """The chain of stages that produced stage ``name`` (older manifests: followed via ``start``)."""
    entry = manifest["stages"][name]
    if "lineage" in entry:
        return list(entry["lineage"])
    by_path = {e["path"]: n for n, e in manifest["stages"].items()}
    parent = by_path.get(entry.get("start"))
    return (_stored_lineage(manifest, parent) if parent and parent != name else []) + [name]


def run_pipeline(stage: str, base: str, cfg: PipelineConfig, out_dir: str | os.PathLike[str], *,
                 report_studies: list[Study] | None = None, grounding_studies: list[Study] | None = None,
                 pretrain_studies: list[Study] | None = None, base_label: str | None = None,
                 data: dict[str, Any] | None = None, shared: dict[str, str] | None = None,
                 root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run ``stage`` (mcl, svr, adapter or all) and update the manifest.

    Data (paper Sec. 4.2): ``pretrain_studies`` (box-sentence sets: MS-CXR, LATTE-CXR) feed MCL
    and SVR; ``report_studies`` (MIMIC-CXR, IU X-Ray) feed the adapter. Without
    ``pretrain_studies``, MCL falls back to ``report_studies`` and SVR to ``grounding_studies``.
    ``data`` (dataset names/options) is recorded per stage. ``shared`` maps a stage name to the
    ``final/`` directory of an identical stage trained elsewhere (``reproduce`` shares MCL
    between the Table-4 rows): it is recorded, not retrained. Paths inside ``out_dir`` or
    ``root`` (a directory around it, e.g. reproduce's ``--out``) are stored relative to
    ``out_dir``, so the whole directory can move and still resume.

    Under ``all`` the ablation decides the chain (e.g. wo_svr: base -> MCL -> adapter); a
    stage named explicitly starts from what the manifest says came before it. Every stage
    records the chain that produced it; a finished stage that a new request would reuse but
    that came from another chain, strategy or data is refused (before anything trains)."""
    if stage not in (*STAGES, "all"):
        raise BoxmedError(f"unknown stage {stage!r}; use mcl, svr, adapter or all")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    anchor = Path(root) if root is not None else None
    stored_base = _relative(base, out, anchor)
    if manifest and manifest.get("base") != stored_base:
        raise BoxmedError(f"{out} was trained from base {manifest.get('base')!r}, not {stored_base!r}: "
                          "use another --output or the same --base")
    manifest.setdefault("stages", {})
    shared = dict(shared or {})
    mcl_data = pretrain_studies or report_studies
    svr_data = pretrain_studies or grounding_studies
    todo = [s for s in STAGES if s == stage or stage == "all"]
    if stage == "all":
        todo = [s for s in todo if (s != "mcl" or cfg.use_mcl) and (s != "svr" or cfg.use_svr)]

    # ---- plan every stage's start and chain before training anything
    plan: dict[str, list[str]] = {}

    def chain_before(name: str) -> list[str]:
        if stage == "all":
            return [s for s in ("mcl", "svr") if s in todo and STAGES.index(s) < STAGES.index(name)]
        previous = {"mcl": (), "svr": ("mcl",), "adapter": ("svr", "mcl")}[name]
        found = next((p for p in previous if p in manifest["stages"]), None)
        return _stored_lineage(manifest, found) if found else []

    for name in todo:
        plan[name] = chain_before(name) + [name]
    stage_data_keys = {"mcl": (data or {}).get("pretrain") or (data or {}).get("dataset"),
                       "svr": (data or {}).get("pretrain") or (data or {}).get("grounding"),
                       "adapter": (data or {}).get("dataset")}
    for name in todo:
        if name not in manifest["stages"] or not (out / manifest["stages"][name]["path"]).exists():
            continue
        entry = manifest["stages"][name]
        had = _stored_lineage(manifest, name)
        problems = []
        if had != plan[name]:
            problems.append(f"it was trained as {' -> '.join(['base', *had])} (ablation "
                            f"{ablation_of(had) or '?'}), this request needs {' -> '.join(['base', *plan[name]])}")
        if name == "adapter" and entry.get("strategy", cfg.strategy) != cfg.strategy:
            problems.append(f"its strategy is {entry.get('strategy')!r}, not {cfg.strategy!r}")
        if stage_data_keys[name] is not None and entry.get("data") not in (None, stage_data_keys[name]):
            problems.append(f"it was trained on {entry.get('data')}, not {stage_data_keys[name]}")
        if problems:
            raise BoxmedError(f"{out}: stage {name} exists but {'; '.join(problems)}. Nothing was trained: use "
                              f"another --output for this --ablation/--strategy (or delete {out / name})")
    if "svr" in todo and "svr" not in shared and not any(s.boxes for s in svr_data or []):
        raise BoxmedError("SVR needs a pretraining dataset with finding boxes (ms_cxr, latte_cxr, demo): pass "
                          "--pretrain-dataset NAME; nothing was trained")

    manifest.update({"format": 2, "base": stored_base, "base_label": base_label or base})
    manifest.setdefault("config", cfg.to_dict())

    def stage_path(name: str) -> str | None:
        entry = manifest["stages"].get(name)
        if not entry:
            return None
        return str(out / entry["path"]) if not Path(entry["path"]).is_absolute() else entry["path"]

    for name in todo:
        before = plan[name][:-1]
        start = stage_path(before[-1]) if before else base
        if start is None:
            raise BoxmedError(f"stage {name} needs stage {before[-1]} in {out} first")
        if name in shared:
            result = StageResult(name, str(Path(shared[name]).resolve()), skipped=True)
        elif name == "mcl":
            result = run_mcl(start, _need(mcl_data, "mcl"), cfg, out, grounding_studies=svr_data)
        elif name == "svr":
            result = run_svr(start, _need(svr_data, "svr"), cfg, out)
        else:
            result = run_adapter(start, _need(report_studies, "adapter"), cfg, out)
        previous = manifest["stages"].get(name, {})
        entry = {"path": _relative(result.path, out, anchor), "start": _relative(start, out, anchor),
                 "lineage": plan[name],
                 "data": stage_data_keys[name] if stage_data_keys[name] is not None else previous.get("data"),
                 "summary": result.summary or previous.get("summary")}
        if name in shared:
            entry["shared_from"] = entry["path"]
        if name == "adapter":
            entry["strategy"] = cfg.strategy
        manifest["stages"][name] = entry
        if name == "adapter" or "adapter" not in manifest["stages"]:
            manifest["config"] = cfg.to_dict()
        atomic_write_json(out / MANIFEST, _refresh(manifest, out))
    return manifest


def _refresh(manifest: dict[str, Any], out: Path) -> dict[str, Any]:
    """Top-level fields the plugin reads, from the adapter's chain (else the latest phase-I stage)."""
    stages = manifest["stages"]
    adapter = stages.get("adapter")
    last = "adapter" if adapter else "svr" if "svr" in stages else "mcl" if "mcl" in stages else None
    lineage = _stored_lineage(manifest, last) if last else []
    phase1 = [s for s in lineage if s != "adapter"]
    manifest["phase1"] = stages[phase1[-1]]["path"] if phase1 else None
    manifest["adapter"] = adapter["path"] if adapter else None
    manifest["adapter_kind"] = None if not adapter else (
        "lora" if STRATEGY_USES_ADAPTER(adapter.get("strategy", "adapter")) else "full")
    manifest["ablation"] = ablation_of(lineage) if adapter else None
    manifest["strategy"] = adapter.get("strategy") if adapter else None
    return manifest


def STRATEGY_USES_ADAPTER(strategy: str) -> bool:  # noqa: N802 - reads like the table it comes from
    from boxmed_model.config import STRATEGIES

    return STRATEGIES[strategy][2]


def _need(studies: list[Study] | None, stage: str) -> list[Study]:
    if not studies:
        flag = "--dataset" if stage == "adapter" else "--pretrain-dataset (or a --dataset with boxes)"
        raise BoxmedError(f"stage {stage} needs training studies ({flag})")
    return studies
