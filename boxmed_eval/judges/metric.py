"""What GREEN and GEMA-Score share: options, availability, the cached judging call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.judges.base import (GenerationSettings, JudgeBackend, JudgeSpec, judge_availability,
                                     make_backend, parse_judge_spec, run_judge)
from boxmed_eval.judges.cache import CACHE_FILE, JudgeCache
from boxmed_eval.metrics.base import Metric

log = logging.getLogger(__name__)

# Options every judged metric accepts (``Metric(**options)``); others are ignored with a warning.
JUDGE_OPTIONS = ("judge", "judge_model", "batch_size", "cache_dir", "dataset", "allow_remote_phi",
                 "trust_remote_code", "max_new_tokens", "max_total_tokens", "device", "dtype", "concurrency", "timeout_s", "judge_api", "use_proxy")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _positive(metric: str, options: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = options.get(key)
    if value in (None, ""):
        return default
    try:
        number = kind(value)
        ok = number > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise BoxmedError(f"--metric-option {metric}.{key}={value!r}: expected a positive number "
                          f"(e.g. {metric}.{key}={default or 30})")
    return number


class JudgedMetric(Metric):
    """A metric computed by an LLM judge. Subclasses set the default judge and decoding."""

    default_repo: ClassVar[str] = ""
    default_subfolder: ClassVar[str] = ""
    default_max_new_tokens: ClassVar[int] = 1024
    default_judge_api: ClassVar[str] = "chat"
    default_max_total_tokens: ClassVar[int | None] = None  # local judges only; None: max_new_tokens bounds
    default_dtype: ClassVar[str | None] = None  # None: the model's own half precision on GPU
    repetition_penalty: ClassVar[float | None] = None
    prompt_format: ClassVar[str] = "chat"

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(JUDGE_OPTIONS))
        if unknown:  # warn, never fail: a run must not die on a stray option
            log.warning("metric %r ignores unknown option(s) %s; valid: %s", self.name, ", ".join(unknown),
                        ", ".join(JUDGE_OPTIONS))
        super().__init__(**options)
        self.batch_size = _positive(self.name, options, "batch_size", int, 8)
        self.max_new_tokens = _positive(self.name, options, "max_new_tokens", int, self.default_max_new_tokens)
        self.max_total_tokens = _positive(self.name, options, "max_total_tokens", int, self.default_max_total_tokens)
        # checked now, so that a typo fails before any judging, not as a skipped metric later
        for key, kind in (("concurrency", int), ("timeout_s", float)):
            if options.get(key) not in (None, ""):
                self.options[key] = _positive(self.name, options, key, kind, None)
        self.allow_remote_phi = _as_bool(options.get("allow_remote_phi", False))
        self.trust_remote_code = _as_bool(options.get("trust_remote_code", False))
        self.dataset = options.get("dataset")
        self.cache_dir = options.get("cache_dir")
        self._served_model: str | None = None
        self._spec: JudgeSpec | None = None
        self._spec_error = ""
        try:
            self._spec = parse_judge_spec(options.get("judge"), options.get("judge_model"),
                                          default_repo=self.default_repo, default_subfolder=self.default_subfolder)
        except BoxmedError as exc:
            self._spec_error = str(exc)

    @property
    def spec(self) -> JudgeSpec:
        if self._spec is None:
            raise MissingResourceError(self._spec_error)
        return self._spec

    def available(self) -> tuple[bool, str]:
        if self._spec is None:
            return False, self._spec_error
        return judge_availability(self._spec, metric=self.name, default_repo=self.default_repo,
                                  dataset=self.dataset, allow_remote_phi=self.allow_remote_phi)

    @property
    def judge_api(self) -> str:
        """The server endpoint used with an OpenAI-compatible judge (``judge_api`` option)."""
        return str(self.options.get("judge_api") or self.default_judge_api)

    def settings(self) -> GenerationSettings:
        server = self.spec.kind == "openai"
        new_tokens = self.max_new_tokens
        if not server and self.max_total_tokens is not None and not self.options.get("max_new_tokens"):
            new_tokens = self.max_total_tokens  # the total alone bounds a local judge, as in green_score
        return GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=self.repetition_penalty,
                                  prompt_format=self.prompt_format, server_api=self.judge_api if server else "",
                                  max_total_tokens=None if server else self.max_total_tokens)

    def make_backend(self) -> JudgeBackend:
        options = self.options
        backend = make_backend(self.spec, batch_size=self.batch_size, device=options.get("device"),
                               trust_remote_code=self.trust_remote_code,
                               dtype=options.get("dtype") or self.default_dtype, dataset=self.dataset,
                               allow_remote_phi=self.allow_remote_phi, concurrency=options.get("concurrency"),
                               timeout_s=options.get("timeout_s"),
                               use_proxy=_as_bool(options.get("use_proxy", False)))
        if hasattr(backend, "api"):
            backend.api = self.judge_api
        self._served_model = backend.identity  # e.g. the model a server reports serving
        return backend

    def judge(self, prompts: Sequence[str]) -> list[str]:
        """Replies for ``prompts`` through the run directory's cache. A judge that cannot be
        reached or loaded raises MissingResourceError (the run keeps its other metrics)."""
        cache = JudgeCache.in_dir(self.cache_dir)
        if self.cache_dir is None:
            log.info("%s: no run directory given; judge replies are not cached on disk", self.name)
        try:
            return run_judge(prompts, self.settings(), spec=self.spec, backend_factory=self.make_backend,
                             cache=cache, desc=self.name)
        except MissingResourceError:
            raise
        except BoxmedError as exc:  # unreachable server, PHI refusal, load failure
            raise MissingResourceError(f"{exc}") from None

    def conventions(self) -> dict[str, Any]:
        spec = self.spec
        return {f"{self.name}_judge": spec.model_name or self._served_model or spec.display,
                f"{self.name}_judge_backend": "openai" if spec.kind == "openai" else "hf",
                f"{self.name}_max_new_tokens": self.settings().max_new_tokens,
                f"{self.name}_max_total_tokens": self.settings().max_total_tokens,
                f"{self.name}_cache": CACHE_FILE if self.cache_dir is not None else None}
