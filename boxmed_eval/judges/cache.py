"""Judge replies cached in the run directory.

One append-only JSONL file (``judge_cache.jsonl``); each line is one reply keyed by a hash of
(judge model, generation settings, prompt). Every line is flushed as soon as the reply exists,
so a run killed while judging loses at most the reply being written: a torn last line is
ignored on reading and the pair is simply asked again. Prompts are not stored (they hold the
report texts; the run directory already has those), only their hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from boxmed_eval.judges.base import GenerationSettings

log = logging.getLogger(__name__)

CACHE_FILE = "judge_cache.jsonl"


def cache_key(judge: str, settings: GenerationSettings, prompt: str) -> str:
    digest = hashlib.sha256()
    for part in (judge, settings.describe(), prompt):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


class JudgeCache:
    """Replies by key, read from and appended to ``path`` (no file: memory only)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._replies: dict[str, str] = {}
        self._lock = threading.Lock()
        self.torn_lines = 0
        self._tail_checked = False  # whether a torn last line has been terminated
        if self.path is not None and self.path.is_file():
            self._load()

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str] | None) -> "JudgeCache":
        """The cache of a run directory (memory only when ``directory`` is None)."""
        if directory is None:
            return cls(None)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / CACHE_FILE)

    def _load(self) -> None:
        assert self.path is not None
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                    self._replies[str(entry["key"])] = str(entry["reply"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    # a line torn by a kill mid-write: that pair is judged again
                    self.torn_lines += 1
                    log.warning("%s line %d is incomplete (interrupted write?); that pair will be judged again",
                                self.path, number)

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, judge: str, settings: GenerationSettings, prompt: str) -> str | None:
        return self._replies.get(cache_key(judge, settings, prompt))

    def put(self, judge: str, settings: GenerationSettings, prompt: str, reply: str) -> None:
        key = cache_key(judge, settings, prompt)
        with self._lock:
            self._replies[key] = reply
            if self.path is None:
                return
            line = json.dumps({"key": key, "judge": judge, "settings": settings.describe(), "reply": reply,
                               "time": round(time.time(), 3)}, ensure_ascii=False)
            # a torn previous line (killed mid-write) must not swallow this one
            needs_newline = False
            if not self._tail_checked:
                needs_newline = (self.path.is_file() and self.path.stat().st_size > 0
                                 and not self._ends_with_newline())
                self._tail_checked = True
            with self.path.open("a", encoding="utf-8") as handle:
                if needs_newline:
                    handle.write("\n")
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
