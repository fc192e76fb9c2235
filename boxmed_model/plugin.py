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

Batched generation with left padding; greedy decoding. The LoRA adapter is merged into the
weights for report generation (grounded mode unmerges it while the phase-I model answers).
``max_new_tokens`` defaults from the run's dataset (``report_words``). ``ablation=`` /
``strategy=`` make the plugin refuse a trained run whose manifest says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
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


DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_IMAGE_SCALE = 0.25  # paper Sec. 4.2


def _trained_image_scale(weights: str) -> float:
    """The ``image_scale`` a trained run's manifest records (the model reads test images as it
    read training images), else the paper's 1/4."""
    from boxmed_model.train import MANIFEST, read_manifest

    root = Path(weights).expanduser()
    if weights and (root / MANIFEST).is_file():
        scale = (read_manifest(root).get("config") or {}).get("image_scale")
        if scale is not None:
            return float(scale)
    return DEFAULT_IMAGE_SCALE


def default_max_new_tokens(dataset: Any) -> int:
    """Report cap from the dataset's ``report_words`` (a high percentile of its findings length):
    2 tokens per word (Qwen2's BPE writes radiology English at ~1.3 tokens per word, numbers one
    token per digit) + 16; greedy decoding stops at the end token, so the margin costs nothing
    on ordinary reports and keeps long MIMIC findings whole."""
    words = getattr(dataset, "report_words", None)
    return 2 * int(words) + 16 if words else DEFAULT_MAX_NEW_TOKENS


def check_manifest(weights: str, ablation: Any = None, strategy: Any = None) -> None:
    """Refuse trained weights whose manifest says another ablation row / strategy than requested."""
    from boxmed_model.train import MANIFEST, _refresh, read_manifest

    if ablation is None and strategy is None:
        return
    root = Path(weights).expanduser()
    if not (root / MANIFEST).is_file():
        raise BoxmedError(f"--model-arg ablation/strategy given, but {weights} has no {MANIFEST}: only a "
                          "`boxmed-eval train boxmedrl` output records what trained it")
    manifest = read_manifest(root)
    if "ablation" not in manifest and manifest.get("stages"):  # format-1 manifests: derive it
        manifest = _refresh({**manifest, "stages": {k: dict(v) for k, v in manifest["stages"].items()}}, root)
    for name, wanted in (("ablation", ablation), ("strategy", strategy)):
        if wanted is not None and manifest.get(name) != str(wanted):
            raise BoxmedError(f"{root / MANIFEST} was trained with {name} {manifest.get(name)!r}, not {wanted!r} "
                              f"(ablation {manifest.get('ablation')!r}, strategy {manifest.get('strategy')!r}): "
                              "pass the weights of that configuration")


class BoxMedRL(ReportGenerator):
    description = "BoxMed-RL: Qwen2-VL with MCL + SVR pretraining and a LoRA adapter (paper reference model)"
    needs = ("weights=DIR from `boxmed-eval train boxmedrl` (or a Qwen2-VL dir / HF id such as "
             "Qwen/Qwen2-VL-2B-Instruct in the local HF cache, or `tiny`); torch, transformers, peft")
    arguments: ClassVar[dict[str, str]] = {
        "weights": "trained run directory, Qwen2-VL model dir/HF id, or `tiny`/`small` (required)",
        "mode": "report (default) | grounded (adds reasoning chains and boxes)",
        "batch_size": "studies per generate() call inside the plugin (default 8)",
        "max_new_tokens": "report length cap in tokens (default: from the dataset's report length, "
                          "2 x its report_words + 16, e.g. 416 for mimic; 512 when the dataset gives none)",
        "ablation": "refuse weights whose manifest was trained as another Table-4 row (full, wo_mcl_svr, ...)",
        "strategy": "refuse weights whose adapter phase used another Table-5 strategy",
        "max_reasoning_tokens": "cap for the grounded-mode reasoning and box answers (default 256)",
        "max_boxes": "grounded mode: at most this many report sentences are located (default 8)",
        "device": "auto (default: cuda when available) | cpu | cuda | cuda:N",
        "image_scale": "image resize factor before the processor (default: the trained run's config, "
                       "e.g. 0.5 for the demo config; else 0.25, the paper's)",
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
        self.max_new_tokens: int | None = (int(kwargs["max_new_tokens"]) if kwargs.get("max_new_tokens") is not None
                                           else None)  # None: set from the dataset in setup()
        self.max_reasoning_tokens = int(kwargs.get("max_reasoning_tokens", 256))
        self.max_boxes = int(kwargs.get("max_boxes", 8))
        self.image_scale = float(kwargs.get("image_scale", _trained_image_scale(str(kwargs.get("weights", "")))))
        self.device_arg = str(kwargs.get("device", "auto"))
        self.model: Any = None
        self.processor: Any = None
        self.resolved: dict[str, Any] = {}
        check_manifest(str(kwargs["weights"]), kwargs.get("ablation"), kwargs.get("strategy"))

    # ------------------------------------------------------------------ loading

    def setup(self, context: RunContext | None = None) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText

        from boxmed_model.tiny import LOCAL_ONLY, load_processor

        if self.max_new_tokens is None:
            self.max_new_tokens = default_max_new_tokens(context.dataset if context is not None else None)
        self.resolved = resolve_weights(str(self.kwargs["weights"]))
        device = self.device_arg
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        full_model_path = self.resolved["phase1"] or self.resolved["base"]
        if self.resolved["adapter"] and self.resolved["adapter_kind"] == "full":
            full_model_path = self.resolved["adapter"]  # Table-5 rows without adapter: a full model
        try:
            model = AutoModelForImageTextToText.from_pretrained(full_model_path, dtype=dtype, **LOCAL_ONLY)
        except OSError as exc:
            raise MissingResourceError(f"cannot load model weights from {full_model_path!r} ({exc}); for the HF "
                                       "base run `huggingface-cli download Qwen/Qwen2-VL-2B-Instruct` first") from None
        if self.resolved["adapter"] and self.resolved["adapter_kind"] == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.resolved["adapter"])
            if self.mode == "report":
                model = model.merge_and_unload()  # plain weights: no LoRA matmuls per generated token
            else:
                model.merge_adapter()  # merged for reports; unmerged while the phase-I model grounds
        self.model = model.to(device).eval()
        self.device = device
        self.processor = load_processor(full_model_path)

    def provenance(self) -> dict[str, Any]:
        return {"weights": str(self.kwargs.get("weights")), "mode": self.mode, "image_scale": self.image_scale,
                **{k: v for k, v in self.resolved.items()}}

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
            context = self._phase1() if (not use_adapter and disable is not None) else nullcontext()
            with torch.inference_mode(), context:
                generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=processor.tokenizer.pad_token_id)
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
        return outputs

    @contextmanager
    def _phase1(self) -> Iterator[None]:
        """The phase-I model (adapter off): unmerge the LoRA weights, merge them back after."""
        merged = any(getattr(m, "merged", False) for m in self.model.modules())
        if merged:
            self.model.unmerge_adapter()
        try:
            with self.model.disable_adapter():
                yield
        finally:
            if merged:
                self.model.merge_adapter()

    def generate(self, studies: list[Study]) -> list[Prediction]:
        from boxmed_model.data import load_image

        self.setup()
        loaded = [load_image(s.image_paths[0], self.image_scale) for s in studies]
        images = [image for image, _ in loaded]
        raw = self._generate([prompts.report_messages() for _ in studies], images,
                             self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
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
            diseases = [d for d in cot.diseases_from_labels(label) if not d.endswith(")")]
            region = knowledge.regions_for(sentence)[0]
            for corners in found:  # every box of the sentence (bilateral findings have two)
                x1, y1, x2, y2 = from_qwen(corners, width, height)
                predictions[index].boxes.append(Box(x1, y1, x2, y2, phrase=sentence,
                                                    category=diseases[0] if diseases else "", region=region,
                                                    image_width=width, image_height=height, image_index=0))


    def ground(self, queries: list[Any]) -> list[Any]:
        """Phrase grounding (``run --task grounding``): SVR's prompt with the query phrase
        (:func:`boxmed_model.prompts.svr_messages`), answered by the phase-I model (adapter off, as
        in grounded mode: SVR trained it), greedy; every ``(x1,y1),(x2,y2)`` inside ``<answer>``
        (the reward's parser, :func:`boxmed_model.rewards.parse_boxes`) is a box, 0..1000 of the
        image, mapped to pixels of the original image. Greedy decoding gives no confidence, so
        the boxes carry no score (AP then ranks them in input order)."""
        from boxmed_eval.phrase_grounding import GroundingAnswer
        from boxmed_model.data import load_image

        self.setup()
        loaded = [load_image(q.image_path, self.image_scale) for q in queries]
        answers = self._generate([prompts.svr_messages(q.phrase) for q in queries], [image for image, _ in loaded],
                                 self.max_reasoning_tokens, use_adapter=False)
        out = []
        for query, (_, (width, height)), answer in zip(queries, loaded, answers):
            boxes = [Box(*from_qwen(corners, width, height), phrase=query.phrase, image_width=width,
                         image_height=height, image_index=query.image_index)
                     for corners in parse_boxes(answer_text(answer))]
            out.append(GroundingAnswer(query.id, boxes))
        return out


# ---------------------------------------------------------------------- training command

PRETRAIN_DATASETS = ("ms_cxr", "latte_cxr", "demo")  # box-sentence sets (paper: MS-CXR and LATTE-CXR)


@dataclass
class DataWiring:
    """Which dataset feeds which phase, with per-dataset roots and options (parsed CLI)."""

    pretrain: list[str]
    dataset: str | None
    roots: dict[str, str]
    default_root: str | None
    options: dict[str, dict[str, Any]]

    def root(self, name: str) -> str | None:
        return self.roots.get(name, self.default_root)

    def key(self, name: str) -> dict[str, Any]:
        return {"name": name, **({"options": self.options[name]} if self.options.get(name) else {})}


def parse_wiring(pretrain: tuple[str, ...], dataset: str | None, data_root: tuple[str, ...],
                 dataset_option: tuple[str, ...]) -> DataWiring:
    """``--data-root PATH`` (all datasets) or ``--data-root NAME=PATH``; ``--dataset-option NAME.KEY=VALUE``."""
    from boxmed_eval.datasets.base import DATASETS
    from boxmed_eval.plugins import parse_qualified_args

    twice = sorted({n for n in pretrain if pretrain.count(n) > 1})
    if twice:
        raise BoxmedError(f"--pretrain-dataset {', '.join(twice)} given more than once: name each set once")
    names = set(pretrain) | ({dataset} if dataset else set())
    known = set(DATASETS.names())
    roots: dict[str, str] = {}
    default_root = None
    for item in data_root:
        head, eq, value = item.partition("=")
        if eq and head in known:
            roots[head] = value
        elif default_root is None:
            default_root = item
        else:
            raise BoxmedError(f"--data-root given twice without a dataset name ({default_root!r}, {item!r}): "
                              "write --data-root NAME=PATH for each dataset")
    options = parse_qualified_args(dataset_option, "--dataset-option", "NAME.KEY=VALUE", "ms_cxr.reports=auto")
    for item in dataset_option:
        name = item.partition(".")[0]
        if name not in names:
            raise BoxmedError(f"--dataset-option {item!r} names dataset {name!r}, which is not used here "
                              f"(used: {', '.join(sorted(names)) or 'none'})")
    return DataWiring(list(pretrain), dataset, roots, default_root, options)


def _load_studies(name: str, data_root: str | None, split: str, limit: int | None,
                  options: dict[str, Any] | None = None) -> list[Study]:
    from boxmed_eval.datasets.base import get_dataset

    studies = get_dataset(name, data_root, **(options or {})).load(split)
    return studies[:limit] if limit else studies


def load_pretraining(wiring: DataWiring, split: str, limit: int | None) -> list[Study]:
    """The pretraining studies of every --pretrain-dataset, combined; a set without any finding
    box is refused here, before anything trains (MCL and SVR learn from box-sentence pairs)."""
    combined: list[Study] = []
    for name in wiring.pretrain:
        studies = _load_studies(name, wiring.root(name), split, limit, wiring.options.get(name))
        if not any(s.boxes for s in studies):
            raise BoxmedError(f"pretraining dataset {name!r} has no finding boxes in split {split!r} "
                              f"({len(studies)} studies{' kept by --limit' if limit else ''}): MCL and SVR need "
                              "box-sentence pairs "
                              f"({', '.join(PRETRAIN_DATASETS)}); report-only sets such as mimic or iu_xray go to "
                              "--dataset (the adapter). Nothing was trained.")
        if len(wiring.pretrain) > 1:  # ids are unique per dataset only
            studies = [replace(s, id=f"{name}:{s.id}") for s in studies]
        combined += studies
    return combined


@click.command("boxmedrl")
@click.option("--stage", type=click.Choice(["mcl", "svr", "adapter", "all"]), default="all", show_default=True,
              help="Phase I.1 MCL, phase I.2 SVR, phase II adapter, or all in order (ablations honoured).")
@click.option("--base", required=True, help="`tiny` / `small` (random small Qwen2-VL presets, CPU), a Qwen2-VL model directory, or an "
              "HF id in the local cache (documented: Qwen/Qwen2-VL-2B-Instruct).")
@click.option("--pretrain-dataset", multiple=True, metavar="NAME",
              help="Box-sentence set for MCL and SVR, repeatable and combined (paper: ms_cxr and latte_cxr; demo). "
                   "Default: --dataset, if it has boxes.")
@click.option("--dataset", default=None, help="Report dataset for the adapter (phase II: mimic, iu_xray, demo).")
@click.option("--data-root", multiple=True, metavar="[NAME=]PATH",
              help="Data root of every dataset (PATH) or of one (NAME=PATH), repeatable.")
@click.option("--dataset-option", multiple=True, metavar="NAME.KEY=VALUE",
              help="Dataset adapter option, e.g. ms_cxr.reports=auto, latte_cxr.min_certainty=3 (repeatable).")
@click.option("--svr-dataset", default=None, hidden=True)
@click.option("--svr-data-root", default=None, hidden=True)
@click.option("--split", default="train", show_default=True)
# `--out` as on every other command; `--output` stays accepted for earlier scripts.
@click.option("--out", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Run directory (resumable).")
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
def train_command(stage: str, base: str, pretrain_dataset: tuple[str, ...], dataset: str | None,
                  data_root: tuple[str, ...], dataset_option: tuple[str, ...], svr_dataset: str | None,
                  svr_data_root: str | None, split: str, output: str, config_file: str | None, ablation: str | None,
                  strategy: str | None, limit: int | None, max_steps: int | None, num_generations: int | None) -> None:
    """Train BoxMed-RL: MCL (SFT on CoT chains) -> SVR (GRPO, IoU + format reward) -> LoRA adapter.

    The paper's wiring: --pretrain-dataset ms_cxr --pretrain-dataset latte_cxr (MCL and SVR)
    --dataset mimic (the adapter). Several GPUs/nodes: prefix with
    `accelerate launch [--num_processes N ...] $(which boxmed-eval)`.
    """
    if svr_dataset or svr_data_root:
        raise click.UsageError(
            "--svr-dataset/--svr-data-root were replaced: MCL and SVR now share the pretraining sets. Write "
            f"--pretrain-dataset {svr_dataset or 'NAME'}" + (f" --data-root {svr_dataset or 'NAME'}={svr_data_root}"
                                                           if svr_data_root else "")
            + " (repeatable: --pretrain-dataset ms_cxr --pretrain-dataset latte_cxr), --dataset for the adapter")
    cfg = build_config(config_file, ablation, strategy, max_steps, num_generations)
    wiring = parse_wiring(pretrain_dataset, dataset, data_root, dataset_option)
    manifest = train_from_wiring(stage, base, cfg, wiring, Path(output), split=split, limit=limit)
    click.echo(json.dumps({name: entry.get("summary") for name, entry in manifest["stages"].items()}, indent=2))
    click.echo(f"weights: {output}  (boxmed-eval run --model boxmedrl --model-arg weights={output} ...)")


def build_config(config_file: str | None, ablation: str | None = None, strategy: str | None = None,
                 max_steps: int | None = None, num_generations: int | None = None) -> Any:
    from boxmed_model.config import PipelineConfig

    cfg = PipelineConfig.from_toml(config_file) if config_file else PipelineConfig()
    if ablation:
        cfg = replace(cfg, ablation=ablation)
    if strategy:
        cfg = replace(cfg, strategy=strategy)
    if max_steps is not None:
        cfg = replace(cfg, mcl=replace(cfg.mcl, max_steps=max_steps), svr=replace(cfg.svr, max_steps=max_steps),
                      adapter=replace(cfg.adapter, max_steps=max_steps),
                      vision_pretrain=replace(cfg.vision_pretrain,
                                              steps=min(cfg.vision_pretrain.steps, max_steps)))
    if num_generations is not None:
        cfg = replace(cfg, svr=replace(cfg.svr, num_generations=num_generations))
    return cfg


def prepare_base(base: str, out: Path, texts: list[str], cfg: Any = None,
                 vision_studies: list[Any] | None = None) -> str:
    """A preset name becomes a model built (once) in ``out/<preset>_base``, and with
    ``[vision_pretrain] steps > 0`` that model with its vision tower pretrained on
    ``vision_studies``' labels (``out/<preset>_base_vision<steps>``); others pass through."""
    from boxmed_model.tiny import PRESETS, build_tiny_base

    if base not in PRESETS:
        return base
    path = out / f"{base}_base"
    if not (path / "config.json").is_file():
        build_tiny_base(path, texts, preset=base)
        click.echo(f"built the {base} base preset in {path}")
    vision = getattr(cfg, "vision_pretrain", None)
    if vision is None or vision.steps <= 0:
        return str(path)
    from boxmed_model.vision_pretrain import pretrain_vision

    target = out / f"{base}_base_vision{vision.steps}"
    if not (target / "config.json").is_file():
        click.echo(f"pretraining the {base} preset's vision tower ({vision.steps} steps) into {target}")
    return str(pretrain_vision(path, list(vision_studies or []), target, steps=vision.steps,
                               batch_size=vision.batch_size, learning_rate=vision.learning_rate,
                               scale=cfg.image_scale, seed=cfg.seed))


def train_from_wiring(stage: str, base: str, cfg: Any, wiring: DataWiring, out: Path, *, split: str = "train",
                      limit: int | None = None, shared: dict[str, str] | None = None,
                      base_dir: Path | None = None) -> dict[str, Any]:
    """Load what each requested stage needs (refusing bad wiring first), then run the pipeline."""
    from boxmed_model.train import run_pipeline

    needs_pretrain = (stage in ("mcl", "svr") or (stage == "all" and (cfg.use_mcl or cfg.use_svr)))
    needs_reports = stage in ("adapter", "all")
    if needs_reports and not wiring.dataset:
        raise BoxmedError("the adapter stage needs --dataset (the report dataset: mimic, iu_xray, demo)")
    reports = (_load_studies(wiring.dataset, wiring.root(wiring.dataset), split, limit,
                             wiring.options.get(wiring.dataset)) if needs_reports and wiring.dataset else None)
    pretrain = None
    if needs_pretrain:
        if wiring.pretrain:
            pretrain = load_pretraining(wiring, split, limit)
        elif wiring.dataset:
            fallback = DataWiring([wiring.dataset], None, wiring.roots, wiring.default_root, wiring.options)
            try:
                pretrain = load_pretraining(fallback, split, limit)
            except BoxmedError:
                raise BoxmedError(f"MCL and SVR need box-sentence pretraining data and --dataset {wiring.dataset} has "
                                  "no boxes: add --pretrain-dataset ms_cxr --pretrain-dataset latte_cxr (paper), or "
                                  "--ablation wo_mcl_svr. Nothing was trained.") from None
        else:
            raise BoxmedError("MCL and SVR need --pretrain-dataset NAME (ms_cxr, latte_cxr, demo)")
    data = {"pretrain": [wiring.key(n) for n in (wiring.pretrain or [wiring.dataset])] if needs_pretrain else None,
            "dataset": wiring.key(wiring.dataset) if needs_reports and wiring.dataset else None,
            "split": split, "limit": limit}
    texts = [s.findings for s in (reports or pretrain or [])]
    base_path = prepare_base(base, base_dir or out, texts, cfg, reports or pretrain)
    return run_pipeline(stage, base_path, cfg, out, report_studies=reports, pretrain_studies=pretrain,
                        base_label=base, data=data, shared=shared, root=base_dir)


BoxMedRL.training_command = train_command


def _reproduce_commands() -> dict[str, click.Command]:
    from boxmed_model.paper_demo import paper_demo_command
    from boxmed_model.reproduce import REPRODUCE_COMMANDS

    return {**REPRODUCE_COMMANDS, "demo": paper_demo_command}


BoxMedRL.reproduce_commands = _reproduce_commands()
