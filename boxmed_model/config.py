"""Training configuration: one dataclass per stage, a pipeline config with the ablation
switches, loadable from TOML.

Defaults are the paper's (Sec. 4.2) and Visual-RFT's (the SVR settings the paper adopts):

* MCL: AdamW, lr 1e-4, cosine schedule, 2 epochs, batch size 1.
* SVR: GRPO, beta (KL to the frozen MCL model) 0.04, ``loss_type="grpo"``, 8 generations per
  prompt, lr 1e-6, temperature 1.0, 4 epochs, max completion 256 tokens, gradient
  accumulation 2. TRL 1.x counts ``per_device_train_batch_size`` in completions, so one
  prompt with its 8 generations per device step is ``per_device_batch_size = num_generations``.
* Adapter: LoRA rank 8 on the language model only, everything else frozen, 2 epochs.

Example TOML (every key optional)::

    ablation = "full"            # full | wo_mcl_svr | wo_svr | wo_mcl (paper Table 4)
    strategy = "adapter"         # adapter | vision_tower | projector | vision_tower+adapter |
                                 # projector+adapter (paper Table 5)
    image_scale = 0.25
    [mcl]
    learning_rate = 1e-4
    epochs = 2
    grounding_warmup = false     # demo choice: add SVR-format rows to the MCL mix
    [svr]
    num_generations = 8
    [adapter]
    lora_r = 8
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from boxmed_eval.errors import DataError


@dataclass
class MCLConfig:
    learning_rate: float = 1e-4
    epochs: float = 2.0
    lr_scheduler: str = "cosine"
    optimizer: str = "adamw_torch"
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_steps: int = -1  # > 0 overrides epochs (quick runs, tests)
    # Demo choice, NOT the paper: also train on the SVR task's exact answer format (one row per
    # finding phrase with a box: SVR prompt -> "<think>chain</think><answer>(x1,y1),(x2,y2)</answer>").
    # The paper's MCL teaches concept chains only and relies on a pretrained Qwen2-VL that
    # already grounds; a randomly initialised model never samples a parsable box, so every GRPO
    # group scores 0 and SVR gets no learning signal (see boxmed_model/DEMO_RESULTS.md).
    grounding_warmup: bool = False
    # Demo choice, NOT the paper (which fine-tunes the whole pretrained Qwen2-VL): keep the vision
    # tower and projector (``model.visual``) at their starting weights. From random weights at
    # the demo's lr 2e-3 the visual tokens' norm grows 4 -> 164 and their image-to-image spread
    # collapses, so the language model learns to ignore them; a fixed random vision tower keeps
    # the images apart and the model learns to read them (boxmed_model/DEMO_RESULTS.md).
    freeze_vision: bool = False


@dataclass
class SVRConfig:
    learning_rate: float = 1e-6
    epochs: float = 4.0
    beta: float = 0.04
    loss_type: str = "grpo"
    num_generations: int = 8
    temperature: float = 1.0
    max_completion_length: int = 256
    per_device_batch_size: int | None = None  # None: num_generations (one prompt per device step)
    gradient_accumulation_steps: int = 2
    lr_scheduler: str = "constant"
    max_steps: int = -1
    freeze_vision: bool = False  # as MCLConfig.freeze_vision (a demo choice)


@dataclass
class AdapterConfig:
    learning_rate: float = 1e-4
    epochs: float = 2.0
    lr_scheduler: str = "cosine"
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # attention and MLP projections of the language model only (the vision tower has its own
    # qkv/proj/fc names, and the regex in train.py restricts matches to language_model)
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    max_steps: int = -1


@dataclass
class VisionPretrainConfig:
    # Demo choice, NOT the paper: > 0 trains a random preset's vision tower on the training
    # reports' CheXpert labels before any stage (boxmed_model/vision_pretrain.py); 0 = off.
    steps: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3


ABLATIONS: dict[str, tuple[bool, bool]] = {
    # name: (use MCL, use SVR); the adapter phase always runs (paper Table 4)
    "full": (True, True),
    "wo_mcl_svr": (False, False),
    "wo_svr": (True, False),
    "wo_mcl": (False, True),
}

STRATEGIES: dict[str, tuple[bool, bool, bool]] = {
    # name: (train vision tower, train projector `model.visual.merger`, LoRA adapter) (paper Table 5)
    "adapter": (False, False, True),
    "vision_tower": (True, False, False),
    "projector": (False, True, False),
    "vision_tower+adapter": (True, False, True),
    "projector+adapter": (False, True, True),
}


@dataclass
class PipelineConfig:
    ablation: str = "full"
    strategy: str = "adapter"
    image_scale: float = 0.25
    seed: int = 0
    bf16: str = "auto"  # auto: on when a CUDA GPU is there
    gradient_checkpointing: str = "auto"
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 2
    report_to: str = "none"
    mcl: MCLConfig = field(default_factory=MCLConfig)
    svr: SVRConfig = field(default_factory=SVRConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise DataError(f"unknown ablation {self.ablation!r}", fix=f"use one of {', '.join(ABLATIONS)}")
        if self.strategy not in STRATEGIES:
            raise DataError(f"unknown strategy {self.strategy!r}", fix=f"use one of {', '.join(STRATEGIES)}")
        if not 0 < self.image_scale <= 1:
            raise DataError(f"image_scale {self.image_scale} must be in (0, 1]")

    @property
    def use_mcl(self) -> bool:
        return ABLATIONS[self.ablation][0]

    @property
    def use_svr(self) -> bool:
        return ABLATIONS[self.ablation][1]

    @property
    def train_vision_tower(self) -> bool:
        return STRATEGIES[self.strategy][0]

    @property
    def train_projector(self) -> bool:
        return STRATEGIES[self.strategy][1]

    @property
    def use_adapter(self) -> bool:
        return STRATEGIES[self.strategy][2]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["adapter"]["lora_target_modules"] = list(self.adapter.lora_target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: object = "config") -> "PipelineConfig":
        sections = {"mcl": MCLConfig, "svr": SVRConfig, "adapter": AdapterConfig,
                    "vision_pretrain": VisionPretrainConfig}
        top_names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - top_names)
        if unknown:
            raise DataError(f"unknown keys {', '.join(unknown)}", file=source,
                            fix=f"valid top-level keys: {', '.join(sorted(top_names))}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise DataError(f"[{key}] must be a table", file=source)
                names = {f.name for f in fields(sections[key])}
                bad = sorted(set(value) - names)
                if bad:
                    raise DataError(f"unknown keys in [{key}]: {', '.join(bad)}", file=source,
                                    fix=f"valid keys: {', '.join(sorted(names))}")
                if "lora_target_modules" in value:
                    value = {**value, "lora_target_modules": tuple(value["lora_target_modules"])}
                kwargs[key] = sections[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> "PipelineConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("config file not found", file=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"malformed TOML ({exc})", file=path) from None
        return cls.from_dict(data, source=path)

    def with_overrides(self, **overrides: Any) -> "PipelineConfig":
        return replace(self, **overrides)
