"""The run directory: resumable predictions, atomic result files, provenance.

| file | content |
|---|---|
| run.json | model, model args, dataset, split, data root, seed, versions, git revision, timings |
| predictions.jsonl | one object per study (id, report, reasoning?, boxes?), appended and fsynced per batch |
| scores.csv | one row per study id, one column per per-sample metric |
| summary.json | flat {metric: corpus value}, plus "conventions", "n_studies", "messages" |
| <table>.csv | extra tables a metric produces (e.g. per_class.csv) |

A killed run leaves at worst a half-written last line in predictions.jsonl; reopening the
directory drops that line, and generation resumes from the ids already written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.metrics.base import MetricResult
from boxmed_eval.records import Prediction, Study, atomic_write_json, atomic_write_text, iter_jsonl, read_json, read_studies

log = logging.getLogger(__name__)

# Fields of run.json that define what a run is: resuming with different values would mix
# predictions of two different experiments in one file.
IDENTITY_FIELDS = ("model", "model_args", "dataset", "split", "data_root", "dataset_options", "limit", "seed")

# Files a run directory's writers produce; ``--overwrite`` removes these and nothing else.
# The judge cache (judge_cache.jsonl) is deliberately absent: its replies are keyed by judge
# model, settings and prompt, so they stay valid, and they can cost hours to obtain again.
RUN_OUTPUTS = ("run.json", "predictions.jsonl", "references.jsonl", "scores.csv", "summary.json", "per_class.csv",
               "grounding_predictions.jsonl")

_VERSIONED_PACKAGES = ("boxmed-eval", "torch", "transformers", "peft", "trl", "pycocoevalcap", "rouge-score",
                       "scipy", "numpy", "pandas")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_revision() -> str | None:
    """The git commit of the boxmed-eval checkout, with '-dirty' when it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


LOCK_FILE = ".boxmed-eval.lock"


class RunLock:
    """An exclusive lock on a run directory: a lock file created with O_EXCL holding the
    holder's pid, host and command. A lock left by a process that is gone (kill -9, power
    loss) on this host is detected and taken over; one held by another host is only reported
    (its pid cannot be checked from here). Under torchrun each rank locks its own file, so the
    ranks of one launch run together while a second launch into the same directory is refused."""

    def __init__(self, directory: str | os.PathLike[str], rank: int = 0) -> None:
        self.directory = Path(directory)
        name = LOCK_FILE if rank == 0 else f".boxmed-eval.rank{rank}.lock"
        self.path = self.directory / name
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:  # unreadable: a holder killed while writing it, if it is old enough
            try:
                return time.time() - self.path.stat().st_mtime > 30
            except FileNotFoundError:
                return True
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def acquire(self) -> "RunLock":
        _mkdir(self.directory)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv)[:500]}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder == {}:
                    continue  # released meanwhile
                if self._is_stale(holder):
                    log.warning("%s: taking over a stale lock left by %s", self.directory,
                                f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "a killed process")
                    self.path.unlink(missing_ok=True)
                    continue
                who = f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}" \
                    if holder else "another process"
                raise BoxmedError(f"{self.directory} is in use by {who} ({holder.get('command', '') if holder else ''}). "
                                  "Wait for it to finish, or use another --out directory; if that process is gone "
                                  f"(e.g. on another machine), delete {self.path}")
            except OSError as exc:
                raise BoxmedError(f"{self.path}: cannot create the run directory's lock file "
                                  f"({exc.strerror or exc}); is the directory writable?") from None
            try:
                os.write(fd, json.dumps(info).encode("utf-8"))
            finally:
                os.close(fd)
            self.held = True
            return self
        raise BoxmedError(f"{self.path}: could not take the run directory's lock; try again")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_run_references(path: Path) -> dict[str, Study]:
    """A run's references.jsonl (the studies it was scored against, with their boxes)."""
    if not path.exists():
        raise DataError("the run has no references.jsonl", file=path,
                        fix="re-run `boxmed-eval run` with the same arguments (it resumes and writes it)")
    return read_studies(path)


class RunDirectory:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # paths -------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.jsonl"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.csv"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def shard_path(self, rank: int) -> Path:
        return self.path / f"predictions.rank{rank}.jsonl"

    # run.json ------------------------------------------------------------------------
    def lock(self, rank: int = 0) -> RunLock:
        """``with run_dir.lock(): ...`` around everything that writes the directory."""
        return RunLock(self.path, rank)

    def read_config(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        return read_json(self.run_json, what="run.json", fix="restore it, or start the run in a new --out directory")

    def output_files(self) -> list[Path]:
        """Files in the directory that boxmed-eval itself writes (what ``--overwrite`` may
        remove). Anything else (a user's notes, the input files, the judge cache) stays."""
        names = set(RUN_OUTPUTS)
        summary = self._read_summary_quietly()
        for table in (summary or {}).get("tables", []) or []:
            if isinstance(table, str) and "/" not in table and table.endswith(".csv"):
                names.add(table)
        found = [self.path / n for n in sorted(names) if (self.path / n).is_file()]
        # not the lock: whoever overwrites holds it
        found += sorted(p for p in self.path.glob("predictions.rank*.jsonl") if p.is_file())
        found += sorted(p for p in self.path.glob("grounding_predictions.rank*.jsonl") if p.is_file())
        return found

    def _read_summary_quietly(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def start(self, config: dict[str, Any], *, overwrite: bool = False,
              identity: tuple[str, ...] = IDENTITY_FIELDS, keep: Iterable[Path] = ()) -> dict[str, Any]:
        """Create the directory or reopen a compatible one; returns run.json's content.

        A directory holding another run (different ``identity`` fields), or run outputs
        without a run.json (predictions of unknown origin), is refused unless ``overwrite``;
        overwriting removes only the files boxmed-eval writes (never ``keep``, e.g. the
        input files, never the judge cache, never a user's other files)."""
        _mkdir(self.path)
        existing = self.read_config()
        if existing is None and not overwrite:
            # shards are excluded: another rank of this very launch may have started first
            orphans = [p.name for p in self.output_files() if p.name != "run.json"
                       and not p.name.startswith(("predictions.rank", "grounding_predictions.rank"))]
            if orphans:
                raise BoxmedError(f"{self.path} holds {', '.join(orphans)} but no run.json, so it is not a run "
                                  "this command can resume (the predictions may come from another model). "
                                  "Use another --out directory, or --overwrite to replace those files.")
        if overwrite and (existing is not None or self.output_files()):
            protected = {Path(k).resolve() for k in keep}
            removed = []
            for f in self.output_files():
                if f.resolve() in protected:
                    continue
                f.unlink()
                removed.append(f.name)
            if removed:
                log.warning("--overwrite: removed %s from %s (the judge cache and other files are kept)",
                            ", ".join(removed), self.path)
            existing = None
        if existing is not None:
            diffs = [f"{k}: {existing.get(k)!r} (in run.json) vs {config.get(k)!r}" for k in identity
                     if k in config and existing.get(k) != config.get(k)]
            if diffs:
                raise BoxmedError(f"{self.path} holds a different run ({'; '.join(diffs)}). "
                                  "Use another --out directory, or --overwrite to start it again.")
            merged = {**existing, **{k: v for k, v in config.items() if k not in identity}}
            merged["resumed"] = existing.get("resumed", 0) + 1
        else:
            merged = dict(config)
            merged["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        merged["versions"] = package_versions()
        merged["git_revision"] = git_revision()
        self.write_config(merged)
        return merged

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.run_json, config)

    def update_config(self, **fields: Any) -> dict[str, Any]:
        config = self.read_config() or {}
        config.update(fields)
        self.write_config(config)
        return config

    # predictions ---------------------------------------------------------------------
    def read_predictions(self, path: Path | None = None) -> dict[str, Prediction]:
        """Predictions written so far (in file order). A half-written last line, the trace
        of a killed process, is cut off the file so that appending can go on."""
        path = path or self.predictions_path
        if not path.exists():
            return {}
        _repair_truncated_tail(path)
        predictions: dict[str, Prediction] = {}
        for number, obj in iter_jsonl(path):
            try:
                prediction = Prediction.from_dict(obj)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"invalid prediction ({exc})", file=path, record=f"line {number}",
                                fix='each line needs {"id": ..., "report": ...}') from None
            if prediction.id in predictions:
                raise DataError(f"duplicate id {prediction.id!r}", file=path, record=f"line {number}",
                                fix="remove the duplicate line (each study is predicted once)")
            predictions[prediction.id] = prediction
        return predictions

    def append_predictions(self, predictions: Iterable[Prediction], path: Path | None = None) -> None:
        """Append and fsync: once this returns, the batch survives a kill -9 or power loss."""
        text = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions)
        if not text:
            return
        with (path or self.predictions_path).open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def merge_shards(self, world_size: int, order: list[str]) -> None:
        """Merge per-rank prediction files into predictions.jsonl (in study order)."""
        merged = self.read_predictions()
        for rank in range(world_size):
            for pid, prediction in self.read_predictions(self.shard_path(rank)).items():
                merged.setdefault(pid, prediction)
        rows = [merged[i].to_dict() for i in order if i in merged]
        atomic_write_text(self.predictions_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for rank in range(world_size):
            self.shard_path(rank).unlink(missing_ok=True)

    # results ---------------------------------------------------------------------------
    def write_results(self, result: MetricResult, ids: list[str], *, extra_summary: dict[str, Any] | None = None,
                      merge_existing: bool = False) -> dict[str, Any]:
        """Write scores.csv, summary.json and the metric tables atomically. With
        ``merge_existing`` the new metrics are added to those already in the directory."""
        scores = pd.DataFrame({"id": ids})
        for name, values in result.per_sample.items():
            scores[name] = [values.get(i, float("nan")) for i in ids]
        summary: dict[str, Any] = {}
        if merge_existing:
            old = self.read_summary()
            if old:
                summary.update(old)
            if self.scores_path.exists():
                from boxmed_eval.rundata import read_scores

                # read_scores keeps ids like "NA" or "null" as text (pandas would read them as missing)
                previous = read_scores(self.scores_path).reset_index()
                keep = [c for c in previous.columns if c != "id" and c not in scores.columns]
                if keep:
                    scores = scores.merge(previous[["id", *keep]], on="id", how="left")
        summary.update({k: float(v) for k, v in result.corpus.items()})
        conventions = dict(summary.get("conventions", {}))
        conventions.update(result.conventions)
        summary["conventions"] = conventions
        summary["n_studies"] = len(ids)
        summary["messages"] = list(result.messages)
        if extra_summary:
            summary.update(extra_summary)
        atomic_write_text(self.scores_path, scores.to_csv(index=False))
        for name, table in result.tables.items():
            atomic_write_text(self.path / f"{name}.csv", table.to_csv(index=False))
        summary["tables"] = sorted(set(summary.get("tables", []) or []) | {f"{n}.csv" for n in result.tables})
        atomic_write_json(self.summary_path, summary)
        return summary

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text(encoding="utf-8"))


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BoxmedError(f"{path}: cannot create the run directory: a file (not a folder) is in the way") from None
    except NotADirectoryError:
        raise BoxmedError(f"{path}: cannot create the run directory: a part of the path is a file") from None
    except OSError as exc:
        raise BoxmedError(f"{path}: cannot create the run directory ({exc.strerror or exc})") from None


def _repair_truncated_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write interrupted by a kill). The file is only
    opened for writing when there is something to cut (a read-only run can still be read)."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
    with path.open("rb+") as handle:
        # find the last newline
        block = 65536
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        else:
            cut = 0
        log.warning("%s: dropping a half-written last line (%d bytes) left by an interrupted run", path, size - cut)
        handle.truncate(cut)
