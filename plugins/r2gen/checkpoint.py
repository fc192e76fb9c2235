"""Saving and loading R2Gen checkpoints: ours and the officially released ones.

Both are ``torch.save`` dicts with ``state_dict`` in upstream's layout, loaded with
``weights_only=True``. Ours add ``config`` (R2GenConfig as a dict) and ``tokenizer`` (the
vocabulary), so a checkpoint is self-contained. The official ones (``model_iu_xray.pth``,
``model_mimic_cxr.pth``: ``epoch``, ``state_dict``, ``optimizer``, ``monitor_best``) hold
neither: the vocabulary is rebuilt from the annotation.json they were trained with (as
upstream does at every start) and the sizes are read off the state dict's shapes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from boxmed_eval.records import read_json
from boxmed_eval.errors import DataError, MissingResourceError
from plugins.r2gen.model import RESNET_LAYERS, R2GenConfig, R2GenModel, strip_data_parallel_prefix
from plugins.r2gen.tokenizer import TOKENIZER_FORMAT, R2GenTokenizer, check_dataset_name

# R2Gen's per-dataset settings (its README's run scripts): vocabulary threshold, max length.
DATASET_DEFAULTS: dict[str, dict[str, int]] = {
    "iu_xray": {"threshold": 3, "max_seq_length": 60},
    "mimic_cxr": {"threshold": 10, "max_seq_length": 100},
}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file then rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"R2Gen checkpoint not found: {path}. Train one with `boxmed-eval train r2gen "
                                   "--dataset D --out DIR` (DIR/model_best.pth) or pass an official R2Gen "
                                   "checkpoint (model_iu_xray.pth / model_mimic_cxr.pth) with tokenizer=annotation.json")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-weights objects
        raise DataError(f"cannot load as a weights-only torch checkpoint ({type(exc).__name__}: {exc})", file=path,
                        fix="pass a checkpoint saved by `boxmed-eval train r2gen` or an official R2Gen .pth") from None
    if isinstance(data, dict) and "state_dict" not in data and all(isinstance(v, torch.Tensor) for v in data.values()):
        data = {"state_dict": data}  # a bare state dict
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise DataError("expected a dict with a 'state_dict' entry", file=path,
                        fix="pass an R2Gen checkpoint (a dict holding 'state_dict')")
    data["state_dict"] = strip_data_parallel_prefix(data["state_dict"])
    return data


def infer_config(state_dict: dict[str, torch.Tensor], base: R2GenConfig) -> R2GenConfig:
    """Sizes read off an upstream-layout state dict (head counts cannot be: kept from ``base``)."""
    try:
        logit = state_dict["encoder_decoder.logit.weight"]
        d_model = int(logit.shape[1])
        layer_ids = {int(m.group(1)) for k in state_dict
                     if (m := re.match(r"encoder_decoder\.model\.encoder\.layers\.(\d+)\.", k))}
        d_ff = int(state_dict["encoder_decoder.model.encoder.layers.0.feed_forward.w_1.weight"].shape[0])
        slots = int(state_dict["encoder_decoder.model.decoder.layers.0.sublayer.0.norm.mlp_gamma.0.weight"].shape[1]) \
            // d_model
        pe_len = int(state_dict["encoder_decoder.model.tgt_embed.1.pe"].shape[1])
        width = int(state_dict["visual_extractor.model.0.weight"].shape[0])
        bottleneck = any(k.startswith("visual_extractor.model.4.0.conv3.") for k in state_dict)
        counts = tuple(len({int(m.group(1)) for k in state_dict
                            if (m := re.match(rf"visual_extractor\.model\.{stage}\.(\d+)\.", k))})
                       for stage in (4, 5, 6, 7))
    except (KeyError, IndexError) as exc:
        raise DataError(f"state dict is not in R2Gen's layout (missing {exc})",
                        fix="pass a checkpoint of github.com/cuhksz-nlp/R2Gen or of `boxmed-eval train r2gen`") from None
    depth = next((d for d, (block, c) in RESNET_LAYERS.items()
                  if c == counts and (block.expansion == 4) == bottleneck), None)
    if depth is None:
        raise DataError(f"visual extractor with blocks {counts} is not a ResNet-18/34/50/101/152")
    return replace(base, vocab_size=int(logit.shape[0]) - 1, d_model=d_model, rm_d_model=d_model, d_ff=d_ff,
                   num_layers=len(layer_ids), rm_num_slots=slots, positional_max_len=pe_len, resnet_width=width,
                   resnet_depth=depth)


def load_tokenizer(path: str | Path, *, dataset_name: str | None, threshold: int | None) -> R2GenTokenizer:
    """Our tokenizer.json, or an R2Gen annotation.json (vocabulary rebuilt as upstream does)."""
    path = Path(path)
    data = read_json(path, what="tokenizer file", fix="check the tokenizer= path")
    if isinstance(data, dict) and data.get("format") == TOKENIZER_FORMAT:
        tokenizer = R2GenTokenizer.from_dict(data, source=path)
        if dataset_name and dataset_name != tokenizer.dataset_name:
            raise DataError(f"tokenizer cleans reports as {tokenizer.dataset_name!r}, not {dataset_name!r}", file=path)
        return tokenizer
    if dataset_name is None:
        raise DataError("building the vocabulary from an annotation.json needs dataset_name=iu_xray|mimic_cxr",
                        file=path, fix="add --model-arg dataset_name=iu_xray (or mimic_cxr)")
    dataset_name = check_dataset_name(dataset_name)
    threshold = threshold if threshold is not None else DATASET_DEFAULTS[dataset_name]["threshold"]
    return R2GenTokenizer.from_annotation(path, threshold=threshold, dataset_name=dataset_name)


@dataclass
class LoadedModel:
    model: R2GenModel
    tokenizer: R2GenTokenizer
    config: R2GenConfig
    kind: str  # "boxmed" (ours: config + tokenizer inside) or "official" (upstream's release)
    epoch: int | None


def load_model(path: str | Path, *, tokenizer_path: str | Path | None = None, dataset_name: str | None = None,
               threshold: int | None = None, overrides: dict[str, Any] | None = None) -> LoadedModel:
    """Build the model a checkpoint describes and load its weights strictly."""
    checkpoint = read_checkpoint(path)
    state_dict = checkpoint["state_dict"]
    overrides = dict(overrides or {})
    if isinstance(checkpoint.get("config"), dict) and isinstance(checkpoint.get("tokenizer"), dict):
        kind = "boxmed"
        config = R2GenConfig.from_dict({**checkpoint["config"], **overrides})
        tokenizer = (load_tokenizer(tokenizer_path, dataset_name=config.dataset_name, threshold=threshold)
                     if tokenizer_path else R2GenTokenizer.from_dict(checkpoint["tokenizer"], source=path))
    else:
        kind = "official"
        if tokenizer_path is None:
            raise MissingResourceError(
                f"{path} is an official R2Gen checkpoint without its vocabulary: pass --model-arg "
                "tokenizer=PATH/annotation.json (the R2Gen annotation it was trained with) and dataset_name=iu_xray|"
                "mimic_cxr")
        tokenizer = load_tokenizer(tokenizer_path, dataset_name=dataset_name, threshold=threshold)
        name = tokenizer.dataset_name
        base = R2GenConfig(dataset_name=name, vocab_size=tokenizer.vocab_size,
                           max_seq_length=DATASET_DEFAULTS[name]["max_seq_length"])
        config = R2GenConfig.from_dict({**infer_config(state_dict, base).to_dict(), **overrides})
    if dataset_name and dataset_name != config.dataset_name:
        raise DataError(f"checkpoint was trained as {config.dataset_name!r}, not {dataset_name!r}", file=path,
                        fix="drop dataset_name or pass the matching one")
    if config.vocab_size != tokenizer.vocab_size:
        raise DataError(f"the tokenizer has {tokenizer.vocab_size} words but the checkpoint predicts "
                        f"{config.vocab_size + 1} classes (words + 1)", file=path,
                        fix="use the annotation.json and threshold the checkpoint was trained with (R2Gen: IU X-Ray "
                            "threshold 3, MIMIC-CXR 10), or the tokenizer.json saved next to it")
    model = R2GenModel(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise DataError(f"weights do not fit the model: {str(exc)[:2000]}", file=path,
                        fix="check the model-arg size overrides (d_model, num_layers, num_heads...) against "
                            "the checkpoint") from None
    epoch = checkpoint.get("epoch")
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, kind=kind,
                       epoch=int(epoch) if isinstance(epoch, int) else None)
