"""Judge backend: a local transformers model (causal LM, or an image-text-to-text model used
with text only, such as GEMA-Score's Qwen-VL judges).

Loaded from a folder (a model directory or a snapshot in the local HF cache) with
``local_files_only``; custom model code runs only with ``trust_remote_code=True``. Prompts are
sorted by token length and generated in batches with left padding and greedy decoding
(bf16/fp16 on GPU); only the new tokens are decoded. A CUDA out-of-memory error halves the
batch and retries instead of failing the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from boxmed_eval.judges.base import GenerationSettings, JudgeBackend, JudgeError

log = logging.getLogger(__name__)

DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float32": "float32", "fp32": "float32"}


def render_prompt(prompt: str, prompt_format: str, tokenizer: Any | None) -> str:
    """The model input text for ``prompt`` (before tokenisation).

    ``green``: the conversation the green_score package (and RadEval's copy) feeds its judge:
    its chat template applied to ``[human: prompt, gpt: ""]`` with a generation prompt, and the
    EOS token its tokenizer appends (``add_eos_token=True``); the BOS comes from tokenisation.
    ``chat``: the tokenizer's chat template with one user turn (plain text when it has none).
    ``raw``: the prompt unchanged.
    """
    if prompt_format == "green":
        eos = getattr(tokenizer, "eos_token", None) or "</s>"
        return f"<|user|>\n{prompt}{eos}\n<|assistant|>\n{eos}\n<|assistant|>\n{eos}"
    if prompt_format == "messages":
        messages = json.loads(prompt)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # no template: the turns as plain text, ending where the assistant answers
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    if prompt_format == "chat" and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def _adds_special_tokens(prompt_format: str, tokenizer: Any) -> bool:
    # chat templates write their own BOS; the other formats get the tokenizer's specials
    return not (prompt_format in ("chat", "messages") and getattr(tokenizer, "chat_template", None))


class HFJudge(JudgeBackend):
    kind = "hf"

    def __init__(self, folder: str | os.PathLike[str], *, name: str | None = None, batch_size: int = 8,
                 device: str | None = None, trust_remote_code: bool = False, dtype: str | None = None) -> None:
        import torch

        self.folder = Path(folder)
        self.name = name or str(self.folder)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.trust_remote_code = bool(trust_remote_code)
        self.model, self.tokenizer = self._load(dtype)
        self.batches_run = 0  # generate() calls on the model (tests, logs)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, *, name: str, batch_size: int = 8) -> "HFJudge":
        """A judge around an already loaded model and tokenizer (benchmarks, notebooks)."""
        judge = cls.__new__(cls)
        judge.folder = Path(".")
        judge.name = name
        judge.batch_size = max(1, int(batch_size))
        judge.device = next(model.parameters()).device
        judge.trust_remote_code = False
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        judge.model, judge.tokenizer = model.eval(), tokenizer
        judge.batches_run = 0
        return judge

    @property
    def identity(self) -> str:
        return self.name

    def _torch_dtype(self, requested: str | None, config: Any) -> Any:
        import torch

        if requested and requested != "auto":
            if requested not in DTYPES:
                raise JudgeError(f"judge dtype {requested!r}: use one of {', '.join(sorted(set(DTYPES)))}")
            if self.device.type == "cuda" or DTYPES[requested] == "float32":
                return getattr(torch, DTYPES[requested])
            log.info("judge %s: %s requested but running on %s; using float32", self.name, requested, self.device)
        if self.device.type != "cuda":
            return torch.float32
        native = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if native in (torch.float16, torch.bfloat16, "float16", "bfloat16"):
            return getattr(torch, native) if isinstance(native, str) else native
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _load(self, dtype: str | None) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

        try:
            config = AutoConfig.from_pretrained(self.folder, trust_remote_code=self.trust_remote_code,
                                                local_files_only=True)
        except ValueError as exc:
            if "trust_remote_code" in str(exc):
                raise JudgeError(f"judge {self.name} needs its own model code; rerun with --trust-remote-code if you "
                                 "trust it") from None
            raise JudgeError(f"judge {self.name}: cannot read its config in {self.folder}: {exc}") from None
        model_class: Any = AutoModelForCausalLM
        if (config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                and config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES):
            from transformers import AutoModelForImageTextToText

            model_class = AutoModelForImageTextToText
        torch_dtype = self._torch_dtype(dtype, config)
        log.info("loading judge %s (%s, %s) on %s", self.name, model_class.__name__, torch_dtype, self.device)
        try:
            kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": self.trust_remote_code,
                                      "local_files_only": True}
            if self.device.type == "cuda":
                kwargs["device_map"] = {"": str(self.device)}
            model = model_class.from_pretrained(self.folder, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=self.trust_remote_code,
                                                      local_files_only=True)
        except OSError as exc:
            raise JudgeError(f"judge {self.name}: cannot load from {self.folder}: {exc}") from None
        if self.device.type != "cuda":
            model = model.to(self.device)
        model.eval()
        tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def _eos_ids(self) -> Any:
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        return configured if configured is not None else self.tokenizer.eos_token_id

    def _generate_batch(self, texts: list[str], settings: GenerationSettings) -> list[str]:
        import torch
        from transformers import GenerationConfig

        total = settings.max_total_tokens
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=total is not None,
                                 max_length=total,
                                 add_special_tokens=_adds_special_tokens(settings.prompt_format, self.tokenizer))
        encoded = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        if total is None:
            budgets = [settings.max_new_tokens] * len(texts)
        else:  # prompt + reply <= total, per prompt: what each prompt would get alone
            budgets = [max(0, min(settings.max_new_tokens, total - int(n)))
                       for n in encoded["attention_mask"].sum(dim=1).tolist()]
        if max(budgets) == 0:
            return [""] * len(texts)
        generation = GenerationConfig(do_sample=False, max_new_tokens=max(budgets),
                                      repetition_penalty=settings.repetition_penalty or 1.0,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids())
        with torch.inference_mode():
            output = self.model.generate(**encoded, generation_config=generation)
        self.batches_run += 1
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row[:budget], skip_special_tokens=True) for row, budget in zip(new_tokens, budgets)]

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        import torch

        texts = [render_prompt(p, settings.prompt_format, self.tokenizer) for p in prompts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        # longest first: similar lengths share a batch (little padding) and an OOM shows at once
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        batch_size = self.batch_size
        start = 0
        while start < len(order):
            indices = order[start:start + batch_size]
            try:
                replies = self._generate_batch([texts[i] for i in indices], settings)
            except torch.cuda.OutOfMemoryError:
                if batch_size == 1:
                    raise JudgeError(f"judge {self.name}: out of GPU memory even with batch size 1") from None
                torch.cuda.empty_cache()
                batch_size = max(1, batch_size // 2)
                log.warning("judge %s: out of GPU memory, batch size lowered to %d", self.name, batch_size)
                continue
            for index, reply in zip(indices, replies):
                yield index, reply
            start += len(indices)

    def close(self) -> None:
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
