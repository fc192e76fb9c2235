"""Paired significance tests between runs scored on the same studies.

Three tools, all paired by study id:

- :func:`wilcoxon_test`: the Wilcoxon signed-rank test on per-sample scores
  (``scipy.stats.wilcoxon``), the test of the BoxMed-RL paper's Tables 4 and 5, one-tailed
  "is the ablated model lower than the full model".
- :func:`paired_bootstrap`: percentile confidence intervals of a corpus metric, of each run and
  of their difference, resampling studies (the same resample for both runs) and recomputing
  the corpus value from per-sample sufficient statistics.
- :func:`approximate_randomization`: RadEval's paired approximate randomisation test (swap the
  two systems' outputs of each study with probability 0.5, recompute the corpus metric,
  10,000 trials, seed 12345, two-sided).

A *corpus statistic* (:class:`CorpusStatistic`) says how a corpus value is recomputed from rows
of per-sample statistics: the mean of per-sample scores for metrics whose corpus value is that
mean (ROUGE-L, GREEN, GEMA-Score, example-based CheXpert F1), or e.g. BLEU from summed n-gram
counts (:func:`bleu_sufficient_statistics`, :func:`bleu_statistic`), which reproduces
pycocoevalcap's corpus BLEU exactly.

Direction convention: every test looks at ``other - base`` per study. ``alternative="less"``
asks whether OTHER scores lower than BASE (the paper's "ablated lower than full" with BASE the
full model and OTHER an ablation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from boxmed_eval.errors import DataError

if TYPE_CHECKING:
    from boxmed_eval.rundata import RunData

Alternative = Literal["less", "greater", "two-sided"]
ALTERNATIVES: tuple[str, ...] = ("less", "greater", "two-sided")
ZERO_METHODS: tuple[str, ...] = ("wilcox", "pratt", "zsplit")

STAR_LEVELS: tuple[tuple[float, str], ...] = ((0.01, "**"), (0.05, "*"))
"""The paper's marks: ``**`` p < 0.01, ``*`` p < 0.05 (strictly below)."""

RADEVAL_TRIALS = 10_000
RADEVAL_SEED = 12345


def stars(p_value: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else empty (also for NaN / None)."""
    if p_value is None or not math.isfinite(p_value):
        return ""
    for level, mark in STAR_LEVELS:
        if p_value < level:
            return mark
    return ""


# ---------------------------------------------------------------------------- pairing


@dataclass
class PairedScores:
    """Per-sample scores of two runs on the same studies, aligned by id.

    ``dropped`` lists ids left out because either side has no score (NaN), e.g. a judge reply
    that could not be parsed.
    """

    ids: list[str]
    base: np.ndarray
    other: np.ndarray
    dropped: list[str] = field(default_factory=list)

    @property
    def differences(self) -> np.ndarray:
        return self.other - self.base


def pair_scores(base: Mapping[str, float], other: Mapping[str, float], *, base_name: str = "base",
                other_name: str = "other", metric: str = "", drop_nan: bool = True) -> PairedScores:
    """Align two ``{study id: score}`` mappings. Different id sets raise a DataError listing
    the ids that differ (a paired test on different studies would be meaningless)."""
    only_base = sorted(set(base) - set(other))
    only_other = sorted(set(other) - set(base))
    if only_base or only_other:
        parts = []
        if only_base:
            parts.append(f"{len(only_base)} ids only in {base_name}: {_preview(only_base)}")
        if only_other:
            parts.append(f"{len(only_other)} ids only in {other_name}: {_preview(only_other)}")
        what = f" for {metric}" if metric else ""
        raise DataError(f"runs are not paired{what} (" + "; ".join(parts) + ")",
                        file=f"{base_name} vs {other_name}",
                        fix="compare runs of the same dataset split on the same studies "
                            "(same --limit, finished runs)")
    ids = sorted(base)
    a = np.array([float(base[i]) for i in ids], dtype=float)
    b = np.array([float(other[i]) for i in ids], dtype=float)
    dropped: list[str] = []
    if drop_nan:
        keep = np.isfinite(a) & np.isfinite(b)
        if not keep.all():
            dropped = [i for i, k in zip(ids, keep) if not k]
            ids = [i for i, k in zip(ids, keep) if k]
            a, b = a[keep], b[keep]
    return PairedScores(ids=ids, base=a, other=b, dropped=dropped)


def _preview(ids: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(map(str, ids[:n]))
    return shown + (f", ... (+{len(ids) - n} more)" if len(ids) > n else "")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise DataError(f"unknown alternative {alternative!r}", fix=f"use one of {', '.join(ALTERNATIVES)}")


# ---------------------------------------------------------------------------- Wilcoxon


@dataclass
class TestResult:
    """One paired test. ``p_value`` is NaN when the test is undefined (no study with a
    non-zero difference); ``note`` says why."""

    test: str
    p_value: float
    statistic: float
    n: int  # pairs that entered the test
    n_zero: int = 0  # pairs with identical scores
    alternative: str = "less"
    details: dict[str, object] = field(default_factory=dict)
    note: str = ""

    @property
    def stars(self) -> str:
        return stars(self.p_value)


def wilcoxon_test(base: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, *,
                  alternative: Alternative = "less", zero_method: str = "wilcox",
                  method: str = "auto") -> TestResult:
    """Wilcoxon signed-rank test on ``d = other - base`` (paired arrays, same order).

    ``alternative="less"``: OTHER is lower than BASE. Zero differences (studies where both runs
    score the same, common for BLEU-4 = 0 on both sides) follow ``zero_method``:
    ``"wilcox"`` (default, scipy's default and Wilcoxon's original test) drops them;
    ``"pratt"`` ranks them and then drops them; ``"zsplit"`` splits their ranks between the
    signs. ``method`` is scipy's: ``"auto"`` uses the exact null distribution for n <= 50
    without ties or zeros; with ties or zeros, exhaustive permutations for n <= 13 and the
    (tie-corrected) normal approximation otherwise.
    """
    _check_alternative(alternative)
    if zero_method not in ZERO_METHODS:
        raise DataError(f"unknown zero_method {zero_method!r}", fix=f"use one of {', '.join(ZERO_METHODS)}")
    a = np.asarray(base, dtype=float)
    b = np.asarray(other, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"paired samples must be 1-D and of equal length (got {a.shape} and {b.shape})")
    d = b - a
    n_zero = int(np.sum(d == 0))
    details = {"zero_method": zero_method, "method": method}
    if len(d) == 0 or n_zero == len(d):
        note = "no studies" if len(d) == 0 else "identical scores on every study"
        return TestResult("wilcoxon", math.nan, math.nan, len(d), n_zero, alternative, details, note)
    from scipy import stats as scipy_stats  # imported here: scipy.stats costs ~0.7 s of CLI start-up

    result = scipy_stats.wilcoxon(b, a, zero_method=zero_method, alternative=alternative, method=method)
    return TestResult("wilcoxon", float(result.pvalue), float(result.statistic), len(d), n_zero, alternative,
                      details)


# ---------------------------------------------------------------------------- corpus statistics


@dataclass(frozen=True)
class CorpusStatistic:
    """How to recompute a corpus metric from per-sample statistics.

    ``aggregate`` takes an array of shape (studies, k), one row of sufficient statistics per
    study (resampled or swapped rows included), and returns the corpus value.
    """

    name: str
    aggregate: Callable[[np.ndarray], float]


def _mean_of_first_column(rows: np.ndarray) -> float:
    return float(np.mean(rows[:, 0])) if len(rows) else math.nan


MEAN = CorpusStatistic("mean of per-sample scores", _mean_of_first_column)


def as_rows(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-sample values as an array of shape (studies, k): 1-D input becomes one column."""
    rows = np.asarray(values, dtype=float)
    if rows.ndim == 1:
        rows = rows[:, None]
    if rows.ndim != 2:
        raise DataError(f"per-sample statistics must be 1-D or 2-D (got shape {rows.shape})")
    return rows


_BLEU_TINY = 1e-15  # pycocoevalcap bleu_scorer.py constants, so the corpus BLEU matches it bit for bit
_BLEU_SMALL = 1e-9


def bleu_sufficient_statistics(references: Mapping[str, str], hypotheses: Mapping[str, str],
                               ids: Sequence[str], *, max_n: int = 4) -> np.ndarray:
    """Per-study BLEU statistics (pycocoevalcap's): rows ``[hyp_len, ref_len, guess_1..n,
    correct_1..n]`` for the studies ``ids`` in order. Texts are used as given (apply the same
    normalisation the NLG metric applied before calling this)."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = np.zeros((len(ids), 2 + 2 * max_n), dtype=float)
    for row, study in enumerate(ids):
        if study not in references or study not in hypotheses:
            raise DataError(f"no reference or hypothesis for study {study!r}", record=study,
                            fix="give references and hypotheses for every compared study")
        cooked = cook_test(hypotheses[study], cook_refs([references[study]], n=max_n), eff="closest", n=max_n)
        rows[row, 0] = cooked["testlen"]
        rows[row, 1] = cooked["reflen"]
        rows[row, 2:2 + max_n] = cooked["guess"][:max_n]
        rows[row, 2 + max_n:] = cooked["correct"][:max_n]
    return rows


def bleu_statistic(n: int, *, max_n: int = 4) -> CorpusStatistic:
    """Corpus BLEU-n from summed statistics, as pycocoevalcap's ``BleuScorer.compute_score``
    (option "closest" with one reference: the summed reference length)."""

    def aggregate(rows: np.ndarray) -> float:
        totals = rows.sum(axis=0)
        hyp_len, ref_len = totals[0], totals[1]
        guess, correct = totals[2:2 + max_n], totals[2 + max_n:]
        bleu = 1.0
        for k in range(n):
            bleu *= (correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
        score = bleu ** (1.0 / n)
        ratio = (hyp_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
        if ratio < 1:
            score *= math.exp(1 - 1 / ratio)
        return float(score)

    return CorpusStatistic(f"bleu_{n} (corpus, recomputed from n-gram counts)", aggregate)


CE_COUNT_COLUMNS = ("chexpert_tp", "chexpert_fp", "chexpert_fn")
"""Per-study counts over the 14 classes (R2Gen binarisation) that the chexpert metric writes:
the corpus micro P/R/F1 are recomputed from their sums in every resample."""


def ce_micro_statistic(metric: str) -> CorpusStatistic:
    """Corpus micro precision / recall / F1 (sklearn, zero_division=0) from rows ``[tp, fp, fn]``."""
    kind = metric.rsplit("_", 1)[-1]

    def aggregate(rows: np.ndarray) -> float:
        tp, fp, fn = rows.sum(axis=0)
        if kind == "precision":
            return float(tp / (tp + fp)) if tp + fp else 0.0
        if kind == "recall":
            return float(tp / (tp + fn)) if tp + fn else 0.0
        return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0

    return CorpusStatistic(f"{metric} (corpus micro, recomputed from per-study TP/FP/FN)", aggregate)


def _ce_count_rows(run: "RunData", ids: Sequence[str]) -> np.ndarray | None:
    scores = run.scores
    if scores is None or not all(c in scores.columns for c in CE_COUNT_COLUMNS):
        return None
    rows = scores.loc[list(ids), list(CE_COUNT_COLUMNS)].to_numpy(dtype=float)
    return None if np.isnan(rows).any() else rows


# ---------------------------------------------------------------------------- bootstrap


@dataclass
class BootstrapResult:
    """Paired bootstrap: corpus values and percentile intervals of each run and of
    ``other - base``."""

    statistic: str
    base: float
    other: float
    base_ci: tuple[float, float]
    other_ci: tuple[float, float]
    delta_ci: tuple[float, float]
    n_resamples: int
    confidence: float
    seed: int

    @property
    def delta(self) -> float:
        return self.other - self.base

    @property
    def delta_excludes_zero(self) -> bool:
        return self.delta_ci[0] > 0 or self.delta_ci[1] < 0


def paired_bootstrap(base: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, *,
                     statistic: CorpusStatistic = MEAN, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = RADEVAL_SEED, progress: bool = False) -> BootstrapResult:
    """Resample studies with replacement (the same draw for both runs), recompute the corpus
    statistic of each run and the difference; percentile intervals at ``confidence``."""
    a, b = as_rows(base), as_rows(other)
    if a.shape != b.shape:
        raise DataError(f"paired samples differ in shape ({a.shape} vs {b.shape})")
    if len(a) == 0:
        raise DataError("no studies to resample")
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n = len(a)
    base_values = np.empty(n_resamples)
    other_values = np.empty(n_resamples)
    if statistic is MEAN:
        # Vectorised in chunks: the mean of a resample is a gather and a mean.
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            index = rng.integers(0, n, size=(stop - start, n))
            base_values[start:stop] = a[index, 0].mean(axis=1)
            other_values[start:stop] = b[index, 0].mean(axis=1)
    else:
        for trial in tqdm(range(n_resamples), desc="bootstrap", disable=not progress, leave=False):
            index = rng.integers(0, n, size=n)
            base_values[trial] = statistic.aggregate(a[index])
            other_values[trial] = statistic.aggregate(b[index])
    tail = (1 - confidence) / 2 * 100

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)

    return BootstrapResult(statistic.name, statistic.aggregate(a), statistic.aggregate(b), interval(base_values),
                           interval(other_values), interval(other_values - base_values), n_resamples, confidence,
                           seed)


# ---------------------------------------------------------------------------- randomisation


def approximate_randomization(base: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, *,
                              statistic: CorpusStatistic = MEAN, trials: int = RADEVAL_TRIALS,
                              seed: int = RADEVAL_SEED, alternative: Alternative = "two-sided",
                              progress: bool = False) -> TestResult:
    """Paired approximate randomisation (Noreen 1989; RadEval's significance test).

    Each trial swaps the two runs' statistics of each study with probability 0.5 and
    recomputes the corpus difference ``other - base``. p = (count + 1) / (trials + 1) where
    count is the number of trials at least as extreme as the observed difference
    (``|delta|`` two-sided, as RadEval; ``delta <=`` observed for "less", ``>=`` for "greater").
    """
    _check_alternative(alternative)
    a, b = as_rows(base), as_rows(other)
    if a.shape != b.shape:
        raise DataError(f"paired samples differ in shape ({a.shape} vs {b.shape})")
    if len(a) == 0:
        raise DataError("no studies to test")
    observed = statistic.aggregate(b) - statistic.aggregate(a)
    rng = np.random.default_rng(seed)
    n = len(a)
    deltas = np.empty(trials)
    if statistic is MEAN:
        # delta of means after swapping = mean(sign * d) with sign = -1 where swapped.
        d = b[:, 0] - a[:, 0]
        chunk = max(1, 2_000_000 // n)
        for start in range(0, trials, chunk):
            stop = min(trials, start + chunk)
            swap = rng.random((stop - start, n)) < 0.5
            deltas[start:stop] = np.where(swap, -d, d).mean(axis=1)
    else:
        for trial in tqdm(range(trials), desc="randomisation", disable=not progress, leave=False):
            swap = (rng.random(n) < 0.5)[:, None]
            deltas[trial] = statistic.aggregate(np.where(swap, a, b)) - statistic.aggregate(np.where(swap, b, a))
    # A tolerance so that float noise in recomputed sums does not decide ties.
    eps = 1e-12 * max(1.0, abs(observed))
    if alternative == "two-sided":
        count = int(np.sum(np.abs(deltas) >= abs(observed) - eps))
    elif alternative == "less":
        count = int(np.sum(deltas <= observed + eps))
    else:
        count = int(np.sum(deltas >= observed - eps))
    p_value = (count + 1) / (trials + 1)
    return TestResult("randomization", float(p_value), float(observed), n, int(np.sum(np.all(a == b, axis=1))),
                      alternative, {"trials": trials, "seed": seed, "statistic": statistic.name})


# ---------------------------------------------------------------------------- multiple comparisons


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    Sort the m finite p-values ascending; the i-th (from 0) gets ``(m - i) * p``, made
    monotone non-decreasing and capped at 1. NaN p-values stay NaN and do not count in m.
    """
    values = [float(p) for p in p_values]
    finite = [i for i, p in enumerate(values) if math.isfinite(p)]
    order = sorted(finite, key=lambda i: values[i])
    m = len(order)
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


CORRECTIONS: tuple[str, ...] = ("none", "holm")


def correct(p_values: Sequence[float], method: str = "none") -> list[float]:
    if method == "none":
        return [float(p) for p in p_values]
    if method == "holm":
        return holm(p_values)
    raise DataError(f"unknown correction {method!r}", fix=f"use one of {', '.join(CORRECTIONS)}")


# ---------------------------------------------------------------------------- runs


PER_SAMPLE_PROXIES: dict[str, str] = {
    "chexpert_f1": "chexpert_example_f1",
    "chexpert_precision": "chexpert_example_precision",
    "chexpert_recall": "chexpert_example_recall",
}
"""Corpus metrics without a per-sample score of their own (micro-averaged CheXpert F1) are
tested on the closest per-sample score; the table says so in a note."""

TESTS: tuple[str, ...] = ("wilcoxon", "randomization", "bootstrap")


@dataclass
class ComparisonEntry:
    """The test of one OTHER run against BASE on one metric."""

    metric: str
    per_sample_metric: str
    result: TestResult | None = None
    bootstrap: BootstrapResult | None = None
    p_adjusted: float | None = None
    dropped: int = 0

    @property
    def p_value(self) -> float | None:
        return self.result.p_value if self.result else None

    @property
    def p_reported(self) -> float | None:
        """The p-value the table shows (adjusted when a correction was asked)."""
        return self.p_adjusted if self.p_adjusted is not None else self.p_value

    @property
    def stars(self) -> str:
        return stars(self.p_reported) if self.p_reported is not None else ""


@dataclass
class RunComparison:
    base: str
    others: list[str]
    metrics: list[str]
    values: dict[str, dict[str, float | None]]
    entries: dict[tuple[str, str], ComparisonEntry]
    test: str
    alternative: str
    zero_method: str
    correction: str
    notes: list[str] = field(default_factory=list)

    def caption(self) -> str:
        direction = {"less": "lower than", "greater": "higher than", "two-sided": "different from"}[self.alternative]
        if self.test == "wilcoxon":
            how = (f"Wilcoxon signed-rank test on per-sample scores paired by study id "
                   f"({'one-tailed' if self.alternative != 'two-sided' else 'two-sided'}: is each run {direction} "
                   f"{self.base}?; zero differences: {self.zero_method})")
        elif self.test == "randomization":
            how = (f"paired approximate randomisation ({self.alternative}; is each run {direction} {self.base}?)")
        else:
            how = "paired bootstrap 95% confidence interval of the difference (no p-value)"
        if self.test == "bootstrap":
            return f"Runs compared with {self.base}: {how}."
        holm_text = ", Holm-adjusted across metrics" if self.correction == "holm" else ""
        return f"Runs compared with {self.base}: {how}{holm_text}; * p < 0.05, ** p < 0.01."


def compare_runs(base: "RunData", others: Sequence["RunData"], *, metrics: Sequence[str] | None = None,
                 test: str = "wilcoxon", alternative: Alternative = "less", zero_method: str = "wilcox",
                 correction: str = "none", names: Sequence[str] | None = None,
                 references: Mapping[str, str] | None = None, trials: int = RADEVAL_TRIALS,
                 n_resamples: int = 1000, seed: int = RADEVAL_SEED) -> RunComparison:
    """Test every OTHER run against BASE on each metric.

    Values shown are the corpus values of summary.json (the mean of the per-sample scores when
    summary.json lacks the metric). ``wilcoxon`` uses per-sample scores; ``randomization`` and
    ``bootstrap`` recompute the corpus metric: from BLEU n-gram counts for ``bleu_n`` when
    ``references`` are given (and the recomputed full-corpus BLEU matches summary.json), else
    the mean of per-sample scores (stated in the notes). ``correction="holm"`` adjusts each
    OTHER run's p-values across the metrics.
    """
    _check_alternative(alternative)
    if test not in TESTS:
        raise DataError(f"unknown test {test!r}", fix=f"use one of {', '.join(TESTS)}")
    if correction not in CORRECTIONS:
        raise DataError(f"unknown correction {correction!r}", fix=f"use one of {', '.join(CORRECTIONS)}")
    all_runs = [base, *others]
    labels = list(names) if names is not None else [run.name for run in all_runs]
    if len(labels) != len(all_runs):
        raise DataError("internal: one name per run is needed")
    if len(set(labels)) != len(labels):
        # Two runs in directories of the same name: tell them apart by their paths.
        labels = [str(run.path) for run in all_runs]
    for run in all_runs:
        run.require_scores()
    if metrics is None:
        metrics = _shared_metrics(all_runs)
    metrics = list(metrics)
    values: dict[str, dict[str, float | None]] = {}
    for label, run in zip(labels, all_runs):
        values[label] = {m: _corpus_value(run, m) for m in metrics}
    notes: list[str] = []
    entries: dict[tuple[str, str], ComparisonEntry] = {}
    base_label = labels[0]
    bleu_rows = _bleu_rows(all_runs, labels, metrics, references, notes) if test != "wilcoxon" else {}
    proxy_notes: set[str] = set()
    ce_notes: set[str] = set()
    missing_notes: set[str] = set()
    for label, run in zip(labels[1:], others):
        for metric in metrics:
            column = _per_sample_column(metric, [base, run])
            if column is None:
                missing_notes.add(metric)
                continue
            if column != metric:
                proxy_notes.add(f"{metric_label_plain(metric)}: tested on per-sample {column}")
            paired = pair_scores(base.per_sample(column).to_dict(), run.per_sample(column).to_dict(),
                                 base_name=base_label, other_name=label, metric=column)
            entry = ComparisonEntry(metric, column, dropped=len(paired.dropped))
            statistic, a, b = MEAN, paired.base, paired.other
            if metric in bleu_rows.get(label, {}) and not paired.dropped:
                index = {study: i for i, study in enumerate(bleu_rows["__ids__"])}
                order = [index[study] for study in paired.ids]
                statistic = bleu_statistic(int(metric.split("_")[1]))
                a, b = bleu_rows[base_label][metric][order], bleu_rows[label][metric][order]
            elif metric in PER_SAMPLE_PROXIES and test != "wilcoxon":
                rows_a, rows_b = _ce_count_rows(base, paired.ids), _ce_count_rows(run, paired.ids)
                if rows_a is not None and rows_b is not None:
                    statistic, a, b = ce_micro_statistic(metric), rows_a, rows_b
                    ce_notes.add(f"{metric_label_plain(metric)}: corpus micro value recomputed from per-study "
                                 "TP/FP/FN in every resample")
                    proxy_notes.discard(f"{metric_label_plain(metric)}: tested on per-sample {column}")
            if test == "wilcoxon":
                entry.result = wilcoxon_test(paired.base, paired.other, alternative=alternative,
                                             zero_method=zero_method)
            elif test == "randomization":
                entry.result = approximate_randomization(a, b, statistic=statistic, trials=trials, seed=seed,
                                                         alternative=alternative)
            else:
                entry.bootstrap = paired_bootstrap(a, b, statistic=statistic, n_resamples=n_resamples, seed=seed)
            if entry.result is not None and entry.result.note:
                notes.append(f"{label} / {metric}: {entry.result.note} (no p-value).")
            if paired.dropped:
                notes.append(f"{label} / {column}: {len(paired.dropped)} studies without a score on either side "
                             f"left out ({_preview(paired.dropped, 5)}).")
            entries[(label, metric)] = entry
        if correction != "none" and test != "bootstrap":
            own = [entries[(label, m)] for m in metrics if (label, m) in entries]
            adjusted = correct([e.p_value if e.p_value is not None else math.nan for e in own], correction)
            for entry, p in zip(own, adjusted):
                entry.p_adjusted = p
    notes += sorted(f"{n}." for n in proxy_notes | ce_notes)
    if missing_notes:
        notes.append("No per-sample scores (no test) for: " + ", ".join(sorted(missing_notes)) + ".")
    return RunComparison(base_label, labels[1:], metrics, values, entries, test, alternative, zero_method,
                         correction, notes)


def metric_label_plain(metric: str) -> str:
    from boxmed_eval.tables import metric_label

    return metric_label(metric)


def _shared_metrics(runs: Sequence["RunData"]) -> list[str]:
    from boxmed_eval.tables import STANDARD_METRICS

    from boxmed_eval.rundata import GREEN_CRITERIA

    shared = set(runs[0].summary)
    for run in runs[1:]:
        shared &= set(run.summary)
    # GREEN's error counts are lower-is-better sub-scores: compared only when asked by name.
    shared -= {column for _, _, aliases in GREEN_CRITERIA for column in aliases}
    ordered = [m for m in STANDARD_METRICS if m in shared]
    return ordered + sorted(shared - set(ordered))


def _corpus_value(run: "RunData", metric: str) -> float | None:
    value = run.summary.get(metric)
    if value is not None and math.isfinite(value):
        return value
    if run.scores is not None and metric in run.scores.columns:
        mean = float(run.scores[metric].mean())
        return mean if math.isfinite(mean) else None
    return None


def _per_sample_column(metric: str, runs: Sequence["RunData"]) -> str | None:
    for column in (metric, PER_SAMPLE_PROXIES.get(metric)):
        if column and all(run.scores is not None and column in run.scores.columns for run in runs):
            return column
    return None


def _bleu_rows(runs: Sequence["RunData"], labels: Sequence[str], metrics: Sequence[str],
               references: Mapping[str, str] | None, notes: list[str]) -> dict[str, Any]:
    """BLEU sufficient statistics per run, when references are given and every run's
    predictions recompute its summary.json BLEU (same text preparation)."""
    bleu_metrics = [m for m in metrics if m in {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}]
    if not bleu_metrics:
        return {}
    if references is None:
        notes.append("BLEU: resampled as the mean of per-sample BLEU (pass references to recompute corpus BLEU).")
        return {}
    from boxmed_eval.text import normalize_text

    ids = sorted(references)
    refs = {i: normalize_text(references[i]).lower() for i in ids}
    out: dict[str, Any] = {"__ids__": ids}
    for label, run in zip(labels, runs):
        predictions = run.predictions()
        missing = [i for i in ids if i not in predictions]
        if missing:
            notes.append(f"BLEU: {label} has no prediction for {len(missing)} reference ids; per-sample mean used.")
            return {}
        hyps = {i: normalize_text(predictions[i].report).lower() for i in ids}
        rows = bleu_sufficient_statistics(refs, hyps, ids)
        out[label] = {}
        for metric in bleu_metrics:
            recomputed = bleu_statistic(int(metric[-1])).aggregate(rows)
            expected = run.summary.get(metric)
            if expected is not None and abs(recomputed - expected) > 1e-6:
                notes.append(f"BLEU: recomputed {metric} of {label} ({recomputed:.6f}) differs from summary.json "
                             f"({expected:.6f}): different references or text preparation; per-sample mean used.")
                return {}
            out[label][metric] = rows
    notes.append("BLEU: corpus BLEU recomputed from n-gram counts in every resample.")
    return out
