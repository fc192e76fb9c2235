"""The ``r2gen`` model plugin: registered on the entry-point group ``boxmed_eval.models``::

    [project.entry-points."boxmed_eval.models"]
    r2gen = "plugins.r2gen.plugin:R2GenPlugin"
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.plugins import ReportGenerator, RunContext
from boxmed_eval.records import Prediction, Study
from plugins.r2gen.train import train_command

if TYPE_CHECKING:
    from plugins.r2gen.checkpoint import LoadedModel

# torch and the model are imported in setup(): `boxmed-eval models` lists plugins without them.

log = logging.getLogger(__name__)

_SIZE_ARGUMENTS = ("d_model", "d_ff", "num_layers", "num_heads", "rm_num_heads", "rm_num_slots", "resnet_depth",
                   "resnet_width")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"0", "false", "no", "off", ""}
    return bool(value)


class R2GenPlugin(ReportGenerator):
    name = "r2gen"
    description = ("R2Gen (Chen et al. 2020): ResNet-101 + memory-driven Transformer (relational memory, MCLN), "
                   "beam search 3 with trigram blocking; trainable with `boxmed-eval train r2gen`")
    needs = ("--model-arg weights=PATH: a checkpoint from `boxmed-eval train r2gen` (vocabulary inside), or an "
             "official R2Gen release (model_iu_xray.pth / model_mimic_cxr.pth) plus tokenizer=annotation.json and "
             "dataset_name; torch (a GPU helps)")
    arguments = {
        "weights": "path of the .pth checkpoint (ours or an official R2Gen release); required",
        "checkpoint": "deprecated alias of weights=",
        "tokenizer": "tokenizer.json written by training, or the R2Gen annotation.json an official checkpoint was "
                     "trained with (vocabulary rebuilt from its train split)",
        "threshold": "word-count threshold when the vocabulary is rebuilt from an annotation.json "
                     "(default: R2Gen's, IU X-Ray 3, MIMIC-CXR 10)",
        "dataset_name": "iu_xray (two views, IU cleaning) or mimic_cxr (one view); default: the checkpoint's",
        "beam_size": "beam width (default 3, as R2Gen); 1 = greedy",
        "block_trigrams": "forbid repeated trigrams while decoding (default true)",
        "max_length": "maximum generated tokens (default: the checkpoint's max_seq_length, IU 60, MIMIC 100)",
        "device": "torch device, e.g. cpu, cuda, cuda:1 (default: the run's device, else cuda when available)",
        "image_size": "input side in pixels (default: the checkpoint's, 224)",
        **{key: f"model size override ({key}) for official-layout checkpoints of non-default size; "
                "normally read from the checkpoint" for key in _SIZE_ARGUMENTS},
    }
    training_command = train_command

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "checkpoint" in kwargs:
            # One name across plugins for "what to load": weights= (as boxmedrl). checkpoint= stays an alias.
            warnings.warn("r2gen: --model-arg checkpoint= is deprecated, write weights= (same meaning)",
                          DeprecationWarning, stacklevel=2)
            log.warning("r2gen: --model-arg checkpoint= is deprecated; write weights=PATH")
            if "weights" in kwargs and str(kwargs["weights"]) != str(kwargs["checkpoint"]):
                raise BoxmedError("r2gen: weights= and its deprecated alias checkpoint= disagree; pass weights= only")
            kwargs = {**kwargs, "weights": kwargs["checkpoint"]}
        if "weights" not in kwargs:
            raise MissingResourceError(
                "model 'r2gen' needs --model-arg weights=PATH (train one with `boxmed-eval train r2gen --dataset D "
                "--out DIR` and pass DIR/model_best.pth, or pass an official R2Gen checkpoint with "
                "tokenizer=annotation.json dataset_name=iu_xray|mimic_cxr)")
        self.checkpoint = Path(str(kwargs["weights"])).expanduser()
        self.tokenizer_path = kwargs.get("tokenizer")
        self.threshold = int(kwargs["threshold"]) if kwargs.get("threshold") is not None else None
        self.dataset_name = kwargs.get("dataset_name")
        self.beam_size = int(kwargs.get("beam_size", 3))
        self.block_trigrams = _as_bool(kwargs.get("block_trigrams", True))
        self.max_length = int(kwargs["max_length"]) if kwargs.get("max_length") is not None else None
        self.device_name = kwargs.get("device")
        self.overrides: dict[str, Any] = {k: int(kwargs[k]) for k in _SIZE_ARGUMENTS if k in kwargs}
        if kwargs.get("image_size") is not None:
            self.overrides["image_size"] = int(kwargs["image_size"])
        self.loaded: LoadedModel | None = None
        self.device = "cpu"

    def setup(self, context: RunContext | None = None) -> None:
        import torch

        from plugins.r2gen.checkpoint import load_model

        requested = self.device_name or (context.device if context and context.device != "cpu" else None)
        if requested is None:
            # Under torchrun / accelerate launch each rank takes its own GPU.
            requested = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(requested)
        self.loaded = load_model(self.checkpoint, tokenizer_path=self.tokenizer_path, dataset_name=self.dataset_name,
                                 threshold=self.threshold, overrides=self.overrides)
        self.loaded.model.to(self.device).eval()
        log.info("r2gen: loaded %s checkpoint %s (%d words, %s) on %s", self.loaded.kind, self.checkpoint,
                 self.loaded.tokenizer.vocab_size, self.loaded.config.dataset_name, self.device)

    def generate(self, studies: list[Study]) -> list[Prediction]:
        from plugins.r2gen.data import batch_images

        if self.loaded is None:
            self.setup(None)
        assert self.loaded is not None
        config = self.loaded.config
        images = batch_images(studies, config.dataset_name, config.image_size).to(self.device)
        ids = self.loaded.model.generate(images, beam_size=self.beam_size, block_trigrams=self.block_trigrams,
                                         max_length=self.max_length or config.max_seq_length)
        reports = self.loaded.tokenizer.decode_batch(ids.cpu().tolist())
        return [Prediction(id=s.id, report=r) for s, r in zip(studies, reports)]

    def provenance(self) -> dict[str, Any]:
        if self.loaded is None:
            return {"checkpoint": str(self.checkpoint)}
        digest = hashlib.sha256()
        try:
            with self.checkpoint.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise BoxmedError(f"cannot read {self.checkpoint}: {exc}") from None
        return {"checkpoint": str(self.checkpoint.resolve()), "checkpoint_sha256": digest.hexdigest(),
                "checkpoint_kind": self.loaded.kind, "checkpoint_epoch": self.loaded.epoch,
                "config": self.loaded.config.to_dict(), "vocab_size": self.loaded.tokenizer.vocab_size,
                "beam_size": self.beam_size, "block_trigrams": self.block_trigrams,
                "max_length": self.max_length or self.loaded.config.max_seq_length, "device": str(self.device),
                "text": "R2Gen-cleaned: lower case, punctuation stripped, sentences joined by ' . '"}
