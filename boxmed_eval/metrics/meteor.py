"""METEOR 1.5 through pycocoevalcap's jar: robust, sharded, and exactly pycocoevalcap's numbers.

pycocoevalcap's ``Meteor`` sends one ``SCORE`` line per segment to a single JVM, waits for each
reply, then sends one ``EVAL`` line carrying every segment's statistics; the jar answers with a
score per segment and the corpus score computed from the *accumulated* statistics. This module
keeps that protocol and its arithmetic, and changes only how the work is scheduled:

* The ``SCORE`` lines are split into contiguous shards, each scored by its own JVM reading a
  file and writing a file (no round trip per segment, no Python thread in the loop). A
  segment's statistics depend only on that segment, so the shards' statistics lines are exactly
  those a single JVM would write. The final ``EVAL`` over all statistics, in the original
  order, runs on one more JVM (started at the same time, waiting on its pipe): same
  per-segment scores, same corpus aggregate.
* The jar loads its 5.3M-entry English paraphrase table at start-up (several seconds). A
  paraphrase entry can only produce a match if every word of both of its phrases occurs in the
  texts being scored, so the jar is given (``-a``) the subset of entries whose words all occur
  in this corpus, in the original order; the candidate matches, and so the alignments and the
  statistics, are the same. The words of the table are indexed once into a cache directory
  (``$BOXMED_CACHE``, default ``~/.cache/boxmed_eval``) so that the subset takes well under a
  second to cut. Pass ``filter_paraphrases=False`` to load the full table instead.
* Inputs that break the jar are sanitised: line breaks (the jar reads one line per request, and
  pycocoevalcap then deadlocks) become spaces and ``|||`` (its field separator) is removed. The
  JVM runs with an English locale (number formatting of the replies), C1-only JIT and the
  serial collector for short runs (less CPU, same numbers), and the whole computation has a
  timeout, after which the JVMs are killed and :class:`MeteorError` is raised.

Texts without line breaks or ``|||`` get exactly pycocoevalcap's treatment (the hypothesis'
``'|||'`` removal and ``'  ' -> ' '``), so the scores are identical (tested).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boxmed_eval.errors import BoxmedError, MissingResourceError

log = logging.getLogger(__name__)

JAVA_INSTALL_HINT = "install a Java runtime (e.g. apt-get install default-jre-headless) and put `java` on PATH"
_JVM_LOCALE = ["-Duser.language=en", "-Duser.country=US"]
_INDEX_VERSION = "4"
# Characters that end a line for Java's BufferedReader.readLine, plus the other Unicode line
# separators (harmless to replace; they never carry meaning in a report).
_LINE_BREAKS_RE = re.compile(r"[\r\n\u0085\u2028\u2029\x0b\x0c]")
# The jar's notion of a letter or digit (edu.cmu.meteor.util.Normalizer.alnum): its tokeniser
# only splits at characters outside this class, so every token of a normalised text is a run
# of these characters or a single other character.
_JAR_ALNUM = "0-9A-Za-z\u0160\u017d\u0161\u017e\u0178\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e\u0400-\u04ff\u0500-\u0527\ua640-\ua66e\ua67e-\ua697\u1d00-\u1d7f"
_ALNUM_RUN_RE = re.compile(f"[{_JAR_ALNUM}]+")
_OTHER_CHAR_RE = re.compile(f"[^\\s{_JAR_ALNUM}]")
# Characters the jar's normaliser can produce from other characters (quote/dash normalisation,
# HTML entities): treat them as present in every corpus.
_ALWAYS_PRESENT_CHARS = frozenset("'\"-.,<>&`")


# Segments in a row on which a fresh JVM fails before the jar is taken to be unable to run at
# all (too small a heap, a broken install) rather than defeated by one pathological text.
_MAX_FAILURES_IN_A_ROW = 3


class MeteorError(BoxmedError):
    """The METEOR jar failed or did not answer in time."""


def meteor_dir() -> Path:
    """The pycocoevalcap folder holding ``meteor-1.5.jar`` and ``data/paraphrase-en.gz``."""
    try:
        import pycocoevalcap.meteor.meteor as pyco_meteor
    except ImportError as exc:  # pragma: no cover - pycocoevalcap is a dependency
        raise MissingResourceError(f"pycocoevalcap is not installed ({exc}); pip install pycocoevalcap") from None
    return Path(pyco_meteor.__file__).resolve().parent


def java_executable() -> str | None:
    return shutil.which("java")


def meteor_available() -> tuple[bool, str]:
    if java_executable() is None:
        return False, f"no Java runtime found: {JAVA_INSTALL_HINT}"
    jar = meteor_dir() / "meteor-1.5.jar"
    if not jar.is_file():
        return False, f"METEOR jar missing at {jar}; reinstall pycocoevalcap"
    return True, ""


def sanitize_hypothesis(text: str) -> str:
    """pycocoevalcap's own hypothesis treatment, after turning line breaks into spaces."""
    text = _LINE_BREAKS_RE.sub(" ", text)
    return text.replace("|||", "").replace("  ", " ")


def sanitize_reference(text: str) -> str:
    """pycocoevalcap sends references unchanged; line breaks and ``|||`` would break the jar."""
    return _LINE_BREAKS_RE.sub(" ", text).replace("|||", "")


# ---------------------------------------------------------------------------- paraphrase subset


def cache_dir() -> Path:
    from boxmed_eval.paths import cache_root

    return cache_root()


@dataclass
class ParaphraseIndex:
    """The paraphrase table as arrays (about 300 MB on disk): ``words`` (distinct words),
    ``tokens`` (word ids of both phrases of every entry, concatenated), ``entry_len`` (words in
    both phrases) and ``entry_start`` (offset in ``tokens``) per entry, in file order, and
    ``text`` with ``text_start``/``text_len``: each entry as the jar reads it. ``key_entries[key_offsets[w]:key_offsets[w + 1]]`` are the entries whose rarest word
    is ``w``: an entry can only be kept if its rarest word occurs in the corpus, which narrows
    the entries to check from millions to a few hundred thousand."""

    words: list[str]
    tokens: np.ndarray
    entry_len: np.ndarray
    key_offsets: np.ndarray
    key_entries: np.ndarray
    text: np.ndarray  # the entries as the jar reads them ("0\nphrase 1\nphrase 2\n"), UTF-8 bytes
    text_len: np.ndarray

    _ARRAYS = ("tokens", "entry_len", "key_offsets", "key_entries", "text", "text_len")

    def __post_init__(self) -> None:
        # offsets are cumulative sums of the lengths: cheaper to recompute than to store
        lengths = self.entry_len.astype(np.int64)
        self.entry_start = np.cumsum(lengths) - lengths
        text_lengths = self.text_len.astype(np.int64)
        self.text_start = np.cumsum(text_lengths) - text_lengths

    @classmethod
    def build(cls, table: Path) -> "ParaphraseIndex":
        # The file is "probability\nphrase 1\nphrase 2\n" per entry; the jar ignores the
        # probability (ParaphraseTransducer reads and discards it).
        lines = gzip.open(table, "rb").read().decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 3:
            raise MeteorError(f"unexpected paraphrase table layout in {table}")
        vocab: dict[str, int] = {}
        intern = vocab.setdefault
        tokens: list[int] = []
        n_entries = len(lines) // 3
        entry_len = np.empty(n_entries, dtype=np.uint16)
        texts: list[str] = []
        for i in range(n_entries):
            first = lines[3 * i + 1].split()
            second = lines[3 * i + 2].split()
            texts.append(f"0\n{' '.join(first)}\n{' '.join(second)}\n")
            entry_len[i] = len(first) + len(second)
            tokens.extend(intern(w, len(vocab)) for w in first)
            tokens.extend(intern(w, len(vocab)) for w in second)
        dtype = np.uint16 if len(vocab) < 2**16 else np.uint32
        token_ids = np.asarray(tokens, dtype=dtype)
        lengths = entry_len.astype(np.int64)
        entry_start = np.cumsum(lengths) - lengths
        frequency = np.bincount(token_ids, minlength=len(vocab))
        # rarest word of each entry: minimum over (frequency, word id) packed in one integer
        packed = frequency[token_ids].astype(np.int64) * len(vocab) + token_ids
        key = np.minimum.reduceat(packed, entry_start) % len(vocab)
        key_entries = np.argsort(key, kind="stable").astype(np.uint32)
        key_offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(key, minlength=len(vocab)), out=key_offsets[1:])
        encoded = [t.encode("utf-8") for t in texts]
        text_len = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        if text_len.max(initial=0) >= 2**16:
            raise MeteorError(f"unexpected paraphrase entry longer than 64 KB in {table}")
        text = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(list(vocab), token_ids, entry_len, key_offsets, key_entries, text, text_len.astype(np.uint16))

    def save(self, folder: Path) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(self, name))
        (tmp / "words.txt").write_text("\n".join(self.words), encoding="utf-8")
        try:
            tmp.rename(folder)  # atomic: readers never see half an index
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> "ParaphraseIndex":
        return cls((folder / "words.txt").read_text(encoding="utf-8").split("\n"),
                   *(np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls._ARRAYS))

    @classmethod
    def cached(cls, table: Path) -> "ParaphraseIndex":
        stat = table.stat()
        folder = cache_dir() / f"meteor-paraphrase-v{_INDEX_VERSION}-{stat.st_size}-{int(stat.st_mtime)}"
        if (folder / "words.txt").is_file():
            return cls.load(folder)
        log.info("indexing the METEOR paraphrase table once into %s (about 20 s, 300 MB)", folder)
        for old in folder.parent.glob("meteor-paraphrase-v*"):
            if old.name != folder.name and not old.name.startswith("."):  # superseded versions
                shutil.rmtree(old, ignore_errors=True)
        index = cls.build(table)
        try:
            index.save(folder)
        except OSError as exc:
            log.warning("could not cache the METEOR paraphrase index in %s: %s", folder, exc)
        return index

    def subset(self, texts: Sequence[str]) -> bytes:
        """The table's entries whose words all occur in ``texts``, as paraphrase-file text."""
        runs: set[str] = set()
        chars: set[str] = set(_ALWAYS_PRESENT_CHARS)
        corpus = "\n".join(texts)
        for variant in (corpus, corpus.lower()):
            runs.update(_ALNUM_RUN_RE.findall(variant))
            chars.update(_OTHER_CHAR_RE.findall(variant))
        word_ok = np.fromiter(
            (all(r in runs for r in _ALNUM_RUN_RE.findall(w)) and all(c in chars for c in _OTHER_CHAR_RE.findall(w))
             for w in self.words), dtype=bool, count=len(self.words))
        # candidates: entries whose rarest word is in the corpus, back in file order
        ok_ids = np.flatnonzero(word_ok)
        group_start = self.key_offsets[ok_ids]
        group_len = self.key_offsets[ok_ids + 1] - group_start
        candidates = np.sort(self.key_entries[_ranges(group_start, group_len)])
        if not len(candidates):
            return b""
        cand_len = self.entry_len[candidates].astype(np.int64)
        cand_tokens_ok = word_ok[self.tokens[_ranges(self.entry_start[candidates], cand_len)]]
        cand_offsets = np.cumsum(cand_len) - cand_len
        keep = candidates[np.minimum.reduceat(cand_tokens_ok.view(np.uint8), cand_offsets).astype(bool)]
        if not len(keep):
            return b""
        return self.text[_ranges(self.text_start[keep], self.text_len[keep])].tobytes()


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for each pair, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lengths)


# ---------------------------------------------------------------------------- JVM workers


def _meteor_command(java: str, extra_args: list[str], memory: str, flags: list[str]) -> list[str]:
    return [java, *_JVM_LOCALE, *flags, "-jar", f"-Xmx{memory}", "meteor-1.5.jar", "-", "-", "-stdio",
            "-l", "en", "-norm", *extra_args]


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return ("; jar stderr: " + " | ".join(lines[-5:])) if lines else ""


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
        pass


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_shards(n_segments: int) -> int:
    """One JVM per core (they share the cores with the Python scorers, which finish first), at
    least ~1,000 segments each: a JVM costs about half a second of start-up and warm-up."""
    return max(1, min(available_cores(), 8, n_segments // 1000))


# Measured on 3,858 report pairs: the C2 JIT compiler costs more CPU than it saves on a few
# thousand segments (8.5 s -> 5.2 s of CPU with C1 only); on long runs it pays off. The serial
# collector avoids parallel GC threads competing with the other scorers. Scores are unaffected
# (Java floating point is strict; checked by the tests).
_C1_ONLY_BELOW_SEGMENTS = 20_000


def jvm_flags(segments_per_jvm: int) -> list[str]:
    flags = ["-XX:+UseSerialGC"]
    if segments_per_jvm < _C1_ONLY_BELOW_SEGMENTS:
        flags.append("-XX:TieredStopAtLevel=1")
    return flags


@dataclass
class MeteorScores:
    """METEOR of a corpus: the corpus score (from the accumulated statistics of the segments
    that could be scored), one score per segment (NaN where the jar failed on that segment)
    and the failed segments' index -> the jar's error."""

    corpus: float
    per_segment: list[float]
    failed: dict[int, str]


def _first_error(path: Path) -> str:
    """The jar's exception line (e.g. ``java.lang.OutOfMemoryError: Java heap space``)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no error output"
    for line in lines:
        if "Exception" in line or "Error" in line:
            return line.replace('Exception in thread "main" ', "").strip()
    return lines[-1].strip() if lines else "no error output"


def compute_meteor(references: Sequence[str], hypotheses: Sequence[str], *, shards: int | None = None,
                   filter_paraphrases: bool = True, timeout: float = 600.0,
                   memory: str = "2G") -> MeteorScores:
    """METEOR 1.5 as pycocoevalcap computes it.

    One reference per segment. A segment on which the jar itself fails (a 20,000-word
    generation exhausts its heap; pycocoevalcap then dies for the whole corpus) is scored NaN
    and left out of the corpus statistics; its index and the jar's error are in ``failed``, and
    every other segment is scored exactly as pycocoevalcap would. Raises
    :class:`MissingResourceError` without Java and :class:`MeteorError` when the jar cannot run
    at all or exceeds ``timeout`` seconds.
    """
    if len(references) != len(hypotheses):
        raise BoxmedError("internal: METEOR needs as many references as hypotheses")
    ok, reason = meteor_available()
    if not ok:
        raise MissingResourceError(reason)
    if not references:
        return MeteorScores(0.0, [], {})
    deadline = time.monotonic() + timeout
    began = time.perf_counter()
    refs = [sanitize_reference(r) for r in references]
    hyps = [sanitize_hypothesis(h) for h in hypotheses]
    jar_dir = meteor_dir()
    extra: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="boxmed-meteor-"))
    if filter_paraphrases:
        table = jar_dir / "data" / "paraphrase-en.gz"
        try:
            index = ParaphraseIndex.cached(table)
            subset_file = work / "paraphrase-subset.gz"
            with gzip.open(subset_file, "wb", compresslevel=1) as handle:
                handle.write(index.subset(refs + hyps))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        extra = ["-a", str(subset_file)]
        log.debug("METEOR paraphrase subset cut in %.2f s", time.perf_counter() - began)
    n_shards = max(1, min(shards or default_shards(len(refs)), len(refs)))
    java = java_executable()
    assert java is not None
    command = _meteor_command(java, extra, memory, jvm_flags(-(-len(refs) // n_shards)))
    procs: list[subprocess.Popen] = []
    launched = 0

    def launch(lo: int, hi: int) -> subprocess.Popen:
        # A scoring JVM reads its SCORE lines from a file and writes its statistics to a file:
        # no Python thread shuttles lines meanwhile (such threads would keep taking the GIL from
        # the scorers running in this process).
        nonlocal launched
        k, launched = launched, launched + 1
        (work / f"in{k}.txt").write_text("".join(f"SCORE ||| {refs[i]} ||| {hyps[i]}\n" for i in range(lo, hi)),
                                         encoding="utf-8")
        with open(work / f"in{k}.txt", "rb") as stdin, open(work / f"out{k}.txt", "wb") as stdout, \
                open(work / f"err{k}.txt", "wb") as stderr:
            proc = subprocess.Popen(command, cwd=jar_dir, stdin=stdin, stdout=stdout, stderr=stderr)
        proc.boxmed_job = (k, lo, hi)  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    def timed_out(k: int | str) -> MeteorError:
        return MeteorError("the METEOR jar did not answer within the timeout; raise it with the metric option "
                           "meteor_timeout=SECONDS" + _tail(work / f"err{k}.txt"))

    try:
        bounds = np.linspace(0, len(refs), n_shards + 1).astype(int)
        pending = [launch(int(bounds[k]), int(bounds[k + 1])) for k in range(n_shards)]
        # EVAL turns statistics into scores with the language's parameters only: its JVM needs no
        # paraphrase table (an empty one starts faster; the scores are the same, tested). It
        # starts now and waits on its pipe.
        empty_table = work / "no-paraphrases.gz"
        with gzip.open(empty_table, "wb"):
            pass
        eval_command = _meteor_command(java, ["-a", str(empty_table)], memory, jvm_flags(0))
        with open(work / "err_eval.txt", "wb") as stderr:
            evaluator = subprocess.Popen(eval_command, cwd=jar_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr)
        procs.append(evaluator)
        stats: dict[int, str] = {}
        failed: dict[int, str] = {}
        in_a_row = 0
        while pending:
            proc = pending.pop(0)
            k, lo, hi = proc.boxmed_job  # type: ignore[attr-defined]
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise timed_out(k) from None
            lines = (work / f"out{k}.txt").read_text(encoding="utf-8").splitlines()
            if code == 0 and len(lines) == hi - lo:
                stats.update((lo + j, line.strip()) for j, line in enumerate(lines))
                continue
            if code == 0 or len(lines) > hi - lo:
                raise MeteorError(f"the METEOR jar failed (exit code {code}, {len(lines)} of {hi - lo} "
                                  "statistics lines)" + _tail(work / f"err{k}.txt"))
            # The jar died after writing the statistics of the segments before the one it failed
            # on. Keep those and score the rest in a new JVM; a segment on which a fresh JVM
            # fails first is the culprit (this holds even if the dying JVM lost buffered lines).
            stats.update((lo + j, line.strip()) for j, line in enumerate(lines))
            first = lo + len(lines)
            in_a_row = 0 if lines else in_a_row
            if not lines and getattr(proc, "boxmed_retry", False):
                failed[first] = _first_error(work / f"err{k}.txt")
                log.warning("METEOR: the jar failed on segment %d (%s)", first, failed[first])
                first += 1
                in_a_row += 1
                if in_a_row >= _MAX_FAILURES_IN_A_ROW:  # a jar that cannot score at all, not one bad text
                    raise MeteorError(f"the METEOR jar failed on {in_a_row} segments in a row ({failed[first - 1]}); "
                                      f"give it more memory with the metric option meteor_memory=4G (now {memory})"
                                      + _tail(work / f"err{k}.txt"))
            if first < hi:
                retry = launch(first, hi)
                retry.boxmed_retry = True  # type: ignore[attr-defined]
                pending.insert(0, retry)
        log.debug("METEOR statistics of %d segments from %d JVM(s) after %.2f s", len(stats), launched,
                  time.perf_counter() - began)
        order = sorted(stats)
        if not order:
            evaluator.stdin.close()  # type: ignore[union-attr]
            return MeteorScores(float("nan"), [float("nan")] * len(refs), failed)
        try:
            output, _ = evaluator.communicate(("EVAL ||| " + " ||| ".join(stats[i] for i in order) + "\n").encode("utf-8"),
                                              timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise timed_out("_eval") from None
        replies = output.decode("utf-8").split()
        if len(replies) != len(order) + 1:
            raise MeteorError(f"the METEOR jar failed: {len(replies)} scores for {len(order)} segments"
                              + _tail(work / "err_eval.txt"))
        try:
            values = [float(r) for r in replies]
        except ValueError:
            raise MeteorError(f"unexpected reply from the METEOR jar: {replies[:3]!r}") from None
        per = [float("nan")] * len(refs)
        for i, value in zip(order, values):
            per[i] = value
        log.debug("METEOR done in %.2f s", time.perf_counter() - began)
        return MeteorScores(values[-1], per, failed)
    finally:
        for proc in procs:
            _kill(proc)
        shutil.rmtree(work, ignore_errors=True)
