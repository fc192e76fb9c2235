"""The judge backend interface, the judge spec parser and the cached judging loop.

A *judge* is an LLM that reads a prompt (reference + candidate report) and writes a reply that
a metric parses (GREEN, GEMA-Score). Two backends implement :class:`JudgeBackend`:

- ``hf`` (:mod:`boxmed_eval.judges.hf`): a local transformers model, batched on one device;
- ``openai`` (:mod:`boxmed_eval.judges.openai`): any OpenAI-compatible chat-completions server
  (vLLM, SGLang, TGI, ...), called concurrently.

``--judge`` takes a local model directory, a Hugging Face id (optionally ``owner/name/subfolder``,
resolved in the local HF cache only, never downloaded) or an ``http(s)://`` base URL.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from boxmed_eval.errors import BoxmedError, MissingResourceError

log = logging.getLogger(__name__)

# How a prompt string becomes model input. "chat": the model's own chat template with one user
# turn (servers: one user message). "raw": the text as is (gemascore feeds its prompt this way).
# "green": GREEN's own conversation format, rendered exactly as the green_score package does.
# "messages": the prompt is a JSON list of chat messages ({"role", "content"}), for judges whose
# prompt is a conversation (RadFact's system message and few-shot turns).
PROMPT_FORMATS = ("chat", "raw", "green", "messages")

# Weight files one of which must be present for a local judge to be loadable.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class JudgeError(BoxmedError):
    """The judge could not produce replies (server unreachable, model failed to load...)."""


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings of one metric's judge calls; always greedy."""

    max_new_tokens: int = 1024
    repetition_penalty: float | None = None
    prompt_format: str = "chat"
    # An OpenAI-compatible server's endpoint: "chat" (the server applies its chat template) or
    # "completions" (the prompt is sent as formatted here); empty for local judges. The two can
    # answer the same prompt differently, so they must not share cached replies.
    server_api: str = ""
    # A local judge's bound on prompt + reply tokens (green_score's generate(max_length=2048)),
    # on top of max_new_tokens. Servers are bounded by max_new_tokens only.
    max_total_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, not {self.prompt_format!r}")

    def describe(self) -> str:
        """A stable string of the settings, part of the cache key."""
        described = (f"format={self.prompt_format};max_new_tokens={self.max_new_tokens};"
                     f"repetition_penalty={self.repetition_penalty}")
        # "chat" adds nothing, so that caches written before the endpoint was part of the key
        # (all chat) stay valid
        if self.server_api and self.server_api != "chat":
            described += f";server_api={self.server_api}"
        if self.max_total_tokens is not None:
            described += f";max_total_tokens={self.max_total_tokens}"
        return described


class JudgeBackend(ABC):
    """Generates one reply per prompt. Replies come back as ``(index, reply)`` pairs in
    completion order so that the caller can cache each as soon as it exists."""

    kind: ClassVar[str] = ""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Which judge model this is (e.g. ``StanfordAIMI/GREEN-radllama2-7b``): part of the
        cache key. Two backends serving the same weights share cached replies."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        """Yield ``(index into prompts, reply)`` for every prompt; raise :class:`JudgeError`."""

    def close(self) -> None:
        """Free the model / connections."""


@dataclass(frozen=True)
class JudgeSpec:
    """Where a judge comes from: ``kind`` is "openai" (``location`` = base URL), "local"
    (``location`` = a model directory) or "hub" (``location`` = an HF repo id, resolved in the
    local cache only; ``subfolder`` inside the snapshot)."""

    kind: str
    location: str
    subfolder: str = ""
    model_name: str | None = None  # the model to request from a server (--judge-model)

    @property
    def display(self) -> str:
        if self.kind == "hub" and self.subfolder:
            return f"{self.location}/{self.subfolder}"
        return self.location


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def parse_judge_spec(judge: str | None, judge_model: str | None, *, default_repo: str,
                     default_subfolder: str = "") -> JudgeSpec:
    """``--judge`` / ``--judge-model`` -> :class:`JudgeSpec` (the metric's default judge when
    ``judge`` is empty)."""
    if not judge:
        return JudgeSpec("hub", default_repo, default_subfolder, judge_model)
    judge = judge.strip()
    if is_url(judge):
        return JudgeSpec("openai", judge.rstrip("/"), "", judge_model)
    path = Path(judge).expanduser()
    if path.exists():
        if not path.is_dir():
            raise JudgeError(f"--judge {judge}: not a folder; pass a model directory, a Hugging Face id or an "
                             "http:// URL of an OpenAI-compatible server")
        return JudgeSpec("local", str(path.resolve()), "", judge_model)
    parts = [p for p in judge.split("/") if p]
    if len(parts) >= 2 and not judge.startswith((".", "/", "~")):
        return JudgeSpec("hub", "/".join(parts[:2]), "/".join(parts[2:]), judge_model)
    raise JudgeError(f"--judge {judge}: no such folder, and not a Hugging Face id (owner/name) or an http:// URL")


def find_cached_snapshot(repo_id: str, subfolder: str = "") -> Path | None:
    """The local HF-cache folder of ``repo_id`` (plus ``subfolder``) if its config and weights
    are cached; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return None
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        config = try_to_load_from_cache(repo_id, f"{prefix}config.json")
        if not isinstance(config, str):
            return None
        for weights in WEIGHT_FILES:
            if isinstance(try_to_load_from_cache(repo_id, f"{prefix}{weights}"), str):
                return Path(config).parent
    except Exception as exc:  # a malformed id or a broken cache must read as "not available"
        log.debug("HF cache lookup of %s failed: %s", repo_id, exc)
    return None


def local_model_dir(spec: JudgeSpec) -> Path | None:
    """The folder holding the judge's config and weights, or None when it is not here."""
    if spec.kind == "local":
        folder = Path(spec.location)
        if (folder / "config.json").is_file() and any((folder / w).is_file() for w in WEIGHT_FILES):
            return folder
        return None
    if spec.kind == "hub":
        return find_cached_snapshot(spec.location, spec.subfolder)
    return None


def judge_availability(spec: JudgeSpec, *, metric: str, default_repo: str, dataset: str | None = None,
                       allow_remote_phi: bool = False) -> tuple[bool, str]:
    """``(True, "")`` when the judge can be used here; else ``(False, what to pass)``. Never
    raises and never touches the network."""
    try:
        if spec.kind == "openai":
            from boxmed_eval.judges.phi import phi_refusal

            refusal = phi_refusal(spec.location, dataset, allow_remote_phi)
            return (False, refusal) if refusal else (True, "")
        if local_model_dir(spec) is not None:
            return True, ""
        if spec.kind == "local":
            return False, (f"judge folder {spec.location} has no config.json and model weights; pass "
                           f"--judge {metric}=PATH to a model directory, or --judge {metric}=http://HOST:PORT "
                           "of an OpenAI-compatible server")
        what = "the default judge" if spec.location == default_repo else "judge"
        return False, (f"{what} {spec.display} is not in the local Hugging Face cache; pass --judge {metric}=PATH "
                       f"(a local model directory) or --judge {metric}=http://HOST:PORT/v1 (an OpenAI-compatible "
                       f"server such as vLLM), or download it first: huggingface-cli download {spec.location}")
    except Exception as exc:  # available() must never crash a run
        return False, f"judge check failed: {type(exc).__name__}: {exc}"


def make_backend(spec: JudgeSpec, *, batch_size: int = 8, device: str | None = None,
                 trust_remote_code: bool = False, dtype: str | None = None, dataset: str | None = None,
                 allow_remote_phi: bool = False, concurrency: int | None = None,
                 timeout_s: float | None = None, use_proxy: bool = False) -> JudgeBackend:
    """Build the backend for ``spec`` (loads a local model; checks a server's PHI guard)."""
    if spec.kind == "openai":
        from boxmed_eval.judges.openai import DEFAULT_TIMEOUT_S, OpenAIJudge

        return OpenAIJudge(spec.location, model=spec.model_name, dataset=dataset, allow_remote_phi=allow_remote_phi,
                           concurrency=concurrency or max(batch_size, 1),
                           timeout_s=timeout_s if timeout_s not in (None, "") else DEFAULT_TIMEOUT_S,
                           use_proxy=use_proxy)
    folder = local_model_dir(spec)
    if folder is None:
        raise MissingResourceError(f"judge {spec.display} not found locally (config.json + weights)")
    from boxmed_eval.judges.hf import HFJudge

    name = spec.display if spec.kind == "hub" else (spec.model_name or spec.location)
    return HFJudge(folder, name=name, batch_size=batch_size, device=device, trust_remote_code=trust_remote_code,
                   dtype=dtype)


def run_judge(prompts: Sequence[str], settings: GenerationSettings, *, spec: JudgeSpec,
              backend_factory: Any, cache: Any, desc: str = "judge") -> list[str]:
    """Replies for ``prompts``: cached ones are read back, the others generated (duplicates
    once) and appended to ``cache`` one by one as they arrive. ``backend_factory()`` is only
    called when something is missing, so a fully cached re-score loads no model and makes no
    call."""
    from tqdm import tqdm

    identity = judge_identity(spec)
    replies: dict[str, str] = {}
    missing: list[str] = []
    for prompt in dict.fromkeys(prompts):  # unique, in order
        cached = cache.get(identity, settings, prompt)
        if cached is None:
            missing.append(prompt)
        else:
            replies[prompt] = cached
    if missing:
        log.info("%s: %d of %d prompts not cached, generating with %s", desc, len(missing), len(set(prompts)),
                 identity)
        backend = backend_factory()
        try:
            with tqdm(total=len(missing), desc=desc, unit="pair", disable=None) as bar:
                for index, reply in backend.generate(missing, settings):
                    cache.put(identity, settings, missing[index], reply)
                    replies[missing[index]] = reply
                    bar.update(1)
        finally:
            backend.close()
    return [replies[p] for p in prompts]


def judge_identity(spec: JudgeSpec) -> str:
    """The judge-model part of the cache key: the model served, not how it is reached, so a
    local run and a server run of the same weights share the cache."""
    if spec.kind == "openai":
        return spec.model_name or spec.location
    if spec.kind == "local":
        return spec.model_name or spec.location
    return spec.display
