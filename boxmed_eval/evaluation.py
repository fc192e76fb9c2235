"""Orchestration of a run: generate with a plugin (resumable, batched, sharded across
processes under ``accelerate launch``/``torchrun``), then score with the metric registry."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from boxmed_eval.datasets import get_dataset
from boxmed_eval.errors import BoxmedError
from boxmed_eval.metrics.base import METRICS, compute_metrics
from boxmed_eval.plugins import ReportGenerator, RunContext, get_model_class
from boxmed_eval.records import Prediction, Study, write_jsonl
from boxmed_eval.runs import RunDirectory

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    model: str
    dataset: str
    split: str = "test"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    limit: int | None = None
    batch_size: int = 8
    seed: int = 0
    metrics: list[str] | None = None
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    overwrite: bool = False
    task: str = "report"  # or "grounding": phrase grounding (boxmed_eval.phrase_grounding)

    def __post_init__(self) -> None:
        # A negative limit would slice from the end and a batch size <= 0 would drop studies:
        # wrong numbers, not errors, unless refused here.
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise BoxmedError(f"limit must be a positive number of studies, not {self.limit!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BoxmedError(f"batch size must be a positive integer, not {self.batch_size!r}")
        if self.task not in ("report", "grounding"):
            raise BoxmedError(f"unknown task {self.task!r}; choose report or grounding")

    def default_out(self) -> Path:
        return Path("runs") / f"{self.model}_{self.dataset}_{self.split}"

    def identity(self) -> dict[str, Any]:
        return {"model": self.model, "model_args": self.model_args, "dataset": self.dataset, "split": self.split,
                "data_root": str(Path(self.data_root).resolve()) if self.data_root else None,
                "dataset_options": self.dataset_options, "limit": self.limit, "seed": self.seed}


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the variables torchrun / accelerate launch set."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    return rank, world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def generate(run_dir: RunDirectory, plugin: ReportGenerator, studies: list[Study], *, batch_size: int,
             rank: int = 0, world_size: int = 1) -> int:
    """Predict every study not yet in the run directory; returns how many were generated."""
    done = set(run_dir.read_predictions())
    target = run_dir.predictions_path
    if world_size > 1:
        target = run_dir.shard_path(rank)
        done |= set(run_dir.read_predictions(target))
        studies = studies[rank::world_size]
    todo = [s for s in studies if s.id not in done]
    if not todo:
        return 0
    with tqdm(total=len(studies), initial=len(studies) - len(todo), desc=f"generate ({plugin.name})",
              unit="study", disable=None) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            predictions = plugin.generate(batch)
            _check_batch(plugin, batch, predictions)
            by_id = {p.id: p for p in predictions}
            run_dir.append_predictions([by_id[s.id] for s in batch], path=target)
            bar.update(len(batch))
    return len(todo)


def _check_batch(plugin: ReportGenerator, batch: list[Study], predictions: list[Prediction]) -> None:
    expected = [s.id for s in batch]
    got = [p.id for p in predictions]
    if sorted(expected) != sorted(got):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        raise BoxmedError(f"model {plugin.name!r} returned predictions for the wrong studies "
                          f"(missing {missing[:5]}, unexpected {extra[:5]}, {len(got)} for a batch of {len(expected)})")
    for p in predictions:
        if not isinstance(p.report, str):
            raise BoxmedError(f"model {plugin.name!r} returned a non-text report for study {p.id!r}")


def score(run_dir: RunDirectory, references: dict[str, str], predictions: dict[str, Prediction], *,
          metric_names: list[str], metric_options: dict[str, dict[str, Any]] | None = None,
          studies: dict[str, Study] | None = None, merge_existing: bool = False,
          dataset: str | None = None) -> dict[str, Any]:
    """Score predictions against references and write scores.csv / summary.json.

    ``dataset`` is the authoritative dataset name (run.json's): every metric gets it, whatever a
    ``--metric-option METRIC.dataset=...`` says, made stricter when the references look
    credentialed, so the judges' PHI guard cannot be talked down."""
    from boxmed_eval.judges.phi import guard_dataset

    ids = list(references)
    hypotheses = {i: predictions[i].report for i in ids}
    empty = [i for i in ids if not hypotheses[i].strip()]
    if empty:
        log.warning("%d predictions are empty (scored as empty text, i.e. 0 on text metrics): %s", len(empty),
                    ", ".join(empty[:5]))
    options = {name: {**(metric_options or {}).get(name, {})} for name in metric_names}
    phi_dataset = guard_dataset(dataset, None, references.values())
    for name in metric_names:
        options[name]["dataset"] = phi_dataset
    for name in metric_names:  # metrics that cache (LLM judges) keep their cache in the run dir
        options[name].setdefault("cache_dir", str(run_dir.path))
    unknown = unknown_metric_options(metric_names, metric_options or {})
    started = time.perf_counter()
    result = compute_metrics(metric_names, references, hypotheses, studies=studies, predictions=predictions,
                             options=options, progress=True)
    for message in unknown:
        log.warning(message)
    result.messages[:0] = unknown
    extra = {"n_empty_predictions": len(empty), "metrics_requested": metric_names,
             "metrics_skipped": dict(result.skipped),
             "scoring_seconds": round(time.perf_counter() - started, 3)}
    return run_dir.write_results(result, ids, extra_summary=extra, merge_existing=merge_existing)


HARNESS_OPTIONS = frozenset({"cache_dir", "dataset"})


def unknown_metric_options(metric_names: list[str], metric_options: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings for ``--metric-option`` keys that no code of the metric mentions (a typo such
    as ``nlg.preproces=none`` would otherwise be ignored without a word), and for options given
    to a metric family that is not being computed. A heuristic: a key counts as known when it
    appears as a string literal in the metric's module, its base classes' modules or the
    boxmed_eval modules those import."""
    messages = []
    for metric, options in metric_options.items():
        keys = sorted(set(options) - HARNESS_OPTIONS)
        if not keys:
            continue
        if metric not in metric_names:
            # --judge / --allow-remote-phi fill in both judged metrics: not a user's typo
            keys = [k for k in keys if k not in {"judge", "judge_model", "allow_remote_phi", "trust_remote_code"}]
            if not keys:
                continue
            if metric in METRICS.names():
                messages.append(f"--metric-option {metric}.{keys[0]}: metric {metric!r} is not computed in this run")
            else:
                messages.append(f"--metric-option {metric}.{keys[0]}: there is no metric family {metric!r} "
                                f"(valid: {', '.join(METRICS.names())})")
            continue
        try:
            known = _option_literals(METRICS.get(metric))
        except Exception:  # never fail a run on the heuristic
            continue
        for key in keys:
            if key not in known:
                messages.append(f"--metric-option {metric}.{key}: metric {metric!r} does not seem to use an option "
                                f"{key!r} (a typo?); it is probably ignored")
    return messages


def _option_literals(cls: type) -> set[str]:
    import ast
    import importlib
    import inspect
    import re

    modules = {c.__module__ for c in cls.__mro__ if c.__module__.startswith(("boxmed_eval", "boxmed_model", "plugins"))}
    modules.add(cls.__module__)
    literals: set[str] = set()
    seen: set[str] = set()
    queue = list(modules)
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            tree = ast.parse(inspect.getsource(importlib.import_module(name)))
        except (ImportError, OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
            elif isinstance(node, ast.ImportFrom) and node.module and name in modules and \
                    node.module.startswith(("boxmed_eval.metrics", "boxmed_eval.judges")):
                queue.append(node.module)
    return literals


def run(config: RunConfig) -> tuple[RunDirectory, dict[str, Any]]:
    """Generate (resuming) and score; returns the run directory and its summary. The run
    directory is locked for the whole command (each rank its own lock file)."""
    rank, _ = distributed_rank()
    run_dir = RunDirectory(config.out or config.default_out())
    with run_dir.lock(rank):
        if config.task == "grounding":
            from boxmed_eval.phrase_grounding import run_grounding

            return run_grounding(config, run_dir)
        return _run_locked(config, run_dir)


def _run_locked(config: RunConfig, run_dir: RunDirectory) -> tuple[RunDirectory, dict[str, Any]]:
    rank, world = distributed_rank()
    model_cls = get_model_class(config.model)  # fail early on unknown names
    dataset = get_dataset(config.dataset, config.data_root, **config.dataset_options)
    studies = dataset.load(config.split)
    if config.limit is not None:
        studies = studies[: config.limit]
    if not studies:
        raise BoxmedError(f"dataset {config.dataset!r} split {config.split!r} has no studies")
    identity = config.identity()
    identity["data_root"] = str(dataset.data_root)
    from boxmed_eval.phrase_grounding import check_task

    check_task(run_dir, "report", config.overwrite)
    if rank == 0:
        run_dir.start({**identity, "batch_size": config.batch_size, "n_studies": len(studies),
                       "dropped_empty_findings": dataset.dropped_empty, "status": "generating"},
                      overwrite=config.overwrite)
        # The references travel with the run, so `score --run` and the figures need no data root.
        write_jsonl(run_dir.path / "references.jsonl", [s.to_dict() for s in studies])
    else:
        run_dir.path.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    plugin = model_cls(**config.model_args)
    started = time.perf_counter()
    context = RunContext(dataset=dataset, split=config.split, out_dir=run_dir.path, seed=config.seed)
    already = set(run_dir.read_predictions()) | (set(run_dir.read_predictions(run_dir.shard_path(rank))) if world > 1 else set())
    if any(s.id not in already for s in (studies[rank::world] if world > 1 else studies)):
        plugin.setup(context)
    generated = generate(run_dir, plugin, studies, batch_size=config.batch_size, rank=rank, world_size=world)
    generation_seconds = time.perf_counter() - started
    if world > 1:
        if rank != 0:
            return run_dir, {}
        _wait_for_shards(run_dir, studies, world)
        run_dir.merge_shards(world, [s.id for s in studies])
    predictions = run_dir.read_predictions()
    missing = [s.id for s in studies if s.id not in predictions]
    if missing:
        raise BoxmedError(f"{len(missing)} studies have no prediction after generation (e.g. {missing[:5]})")
    references = {s.id: s.findings for s in studies}
    metric_names = config.metrics if config.metrics is not None else default_metrics(config.metric_options)
    metric_options = {name: dict(config.metric_options.get(name, {})) for name in metric_names}
    summary = score(run_dir, references, predictions, metric_names=metric_names, metric_options=metric_options,
                    studies={s.id: s for s in studies}, dataset=config.dataset)
    config_now = run_dir.read_config() or {}
    timings = dict(config_now.get("timings", {}))
    timings[f"generation_seconds_session{config_now.get('resumed', 0)}"] = round(generation_seconds, 3)
    run_dir.update_config(status="complete", timings=timings, generated_this_session=generated,
                          model_provenance=plugin.provenance(), metrics=metric_names)
    return run_dir, summary


def _wait_for_shards(run_dir: RunDirectory, studies: list[Study], world: int, timeout_s: float = 86400) -> None:
    """Rank 0 waits until every rank's shard file holds its share of the studies."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = set(run_dir.read_predictions())
        for r in range(world):
            have |= set(run_dir.read_predictions(run_dir.shard_path(r)))
        if all(s.id in have for s in studies):
            return
        if time.monotonic() > deadline:
            raise BoxmedError("timed out waiting for the other ranks' predictions")
        time.sleep(2)


def default_metrics(metric_options: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Every default metric family, plus the LLM-judge metrics given a ``--judge``."""
    from boxmed_eval.judges import configured_judge_metrics

    names = [name for name, cls in METRICS.items() if cls.default]
    return names + [n for n in configured_judge_metrics(metric_options or {}) if n not in names]
