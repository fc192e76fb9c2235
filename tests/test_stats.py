"""boxmed_eval.stats: Wilcoxon (vs scipy and worked by hand), bootstrap, approximate
randomisation, Holm, pairing errors, BLEU recomputation, compare_runs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from boxmed_eval.errors import DataError
from boxmed_eval.rundata import load_run
from boxmed_eval.stats import (
    MEAN,
    CorpusStatistic,
    approximate_randomization,
    bleu_statistic,
    bleu_sufficient_statistics,
    compare_runs,
    holm,
    pair_scores,
    paired_bootstrap,
    stars,
    wilcoxon_test,
)
from tests.rundir_fixtures import synthetic_run, write_run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_stars_thresholds_are_strict() -> None:
    assert stars(0.0099) == "**"
    assert stars(0.01) == "*"
    assert stars(0.0499) == "*"
    assert stars(0.05) == ""
    assert stars(math.nan) == ""
    assert stars(None) == ""


def _exact_upper_tail(abs_ranks: list[float], observed_w_plus: float) -> float:
    """P(W+ >= observed) under H0 by enumerating all 2^n sign assignments."""
    hits = total = 0
    for signs in itertools.product((0, 1), repeat=len(abs_ranks)):
        total += 1
        hits += sum(r for r, s in zip(abs_ranks, signs) if s) >= observed_w_plus
    return hits / total


def test_wilcoxon_textbook_example_by_hand() -> None:
    # d = other - base = 1, 2, -3, 4, 5: ranks of |d| are 1..5, W+ = 1 + 2 + 4 + 5 = 12.
    # Of the 32 equally likely sign patterns, W+ >= 12 exactly when the negative ranks sum
    # to <= 3: {}, {1}, {2}, {3}, {1, 2} -> 5 patterns, p = 5/32.
    base = [10.0, 10.0, 10.0, 10.0, 10.0]
    other = [11.0, 12.0, 7.0, 14.0, 15.0]
    result = wilcoxon_test(base, other, alternative="greater")
    assert result.p_value == pytest.approx(5 / 32, abs=1e-12)
    assert result.p_value == pytest.approx(_exact_upper_tail([1, 2, 3, 4, 5], 12), abs=1e-12)
    assert result.n == 5 and result.n_zero == 0
    # "less": P(W+ <= 12) = 1 - P(W+ >= 13) = 1 - 3/32 ({}, {1}, {2} as negative sets).
    assert wilcoxon_test(base, other, alternative="less").p_value == pytest.approx(29 / 32, abs=1e-12)


def test_wilcoxon_all_lower_is_one_in_64_and_zero_differences_are_dropped() -> None:
    # Six studies, OTHER lower on every one: only the all-negative pattern has W+ = 0 -> 1/64.
    base = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    other = [b - d for b, d in zip(base, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06])]
    result = wilcoxon_test(base, other, alternative="less")
    assert result.p_value == pytest.approx(1 / 64)
    assert result.stars == "*"
    assert wilcoxon_test(base, other, alternative="two-sided").p_value == pytest.approx(2 / 64)
    # Two extra studies with identical scores: zero_method "wilcox" drops them (same p).
    with_ties = wilcoxon_test(base + [0.3, 0.4], other + [0.3, 0.4], alternative="less")
    assert with_ties.p_value == pytest.approx(1 / 64)
    assert with_ties.n_zero == 2 and with_ties.n == 8


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_wilcoxon_matches_scipy_on_fixed_data(alternative: str, zero_method: str) -> None:
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 1, 120).round(2)
    other = (base - 0.03 + rng.normal(0, 0.1, 120)).round(2)  # rounding makes ties and zeros
    result = wilcoxon_test(base, other, alternative=alternative, zero_method=zero_method)
    expected = wilcoxon(other, base, alternative=alternative, zero_method=zero_method)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert result.statistic == pytest.approx(float(expected.statistic))


def test_wilcoxon_identical_runs_have_no_p_value() -> None:
    result = wilcoxon_test([0.1, 0.2], [0.1, 0.2])
    assert math.isnan(result.p_value)
    assert "identical" in result.note
    assert result.stars == ""


def test_wilcoxon_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="alternative"):
        wilcoxon_test([1.0], [2.0], alternative="lower")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="zero_method"):
        wilcoxon_test([1.0], [2.0], zero_method="drop")
    with pytest.raises(DataError, match="equal length"):
        wilcoxon_test([1.0, 2.0], [2.0])


def test_pair_scores_lists_the_ids_that_differ() -> None:
    with pytest.raises(DataError) as info:
        pair_scores({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 4}, base_name="full", other_name="wo_svr",
                    metric="bleu_4")
    message = str(info.value)
    assert "1 ids only in full: c" in message and "1 ids only in wo_svr: d" in message
    assert "bleu_4" in message and "fix:" in message


def test_pair_scores_aligns_by_id_and_drops_nan_pairs() -> None:
    paired = pair_scores({"b": 2.0, "a": 1.0, "c": math.nan}, {"a": 10.0, "c": 3.0, "b": 20.0})
    assert paired.ids == ["a", "b"]
    assert paired.base.tolist() == [1.0, 2.0] and paired.other.tolist() == [10.0, 20.0]
    assert paired.dropped == ["c"]


def test_holm_worked_by_hand() -> None:
    # sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06); NaN ignored.
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def _loop_mean() -> CorpusStatistic:
    # The generic (per-trial) code path with the same statistic as MEAN.
    return CorpusStatistic("mean (loop)", lambda rows: float(np.mean(rows[:, 0])))


def test_bootstrap_vectorised_mean_equals_generic_path_and_covers_the_estimate() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 200)
    other = base - 0.05 + rng.normal(0, 0.05, 200)
    fast = paired_bootstrap(base, other, n_resamples=300, seed=5)
    slow = paired_bootstrap(base, other, statistic=_loop_mean(), n_resamples=300, seed=5)
    assert fast.delta_ci == pytest.approx(slow.delta_ci)
    assert fast.base_ci == pytest.approx(slow.base_ci)
    assert fast.base_ci[0] < fast.base < fast.base_ci[1]
    assert fast.delta == pytest.approx(float(np.mean(other - base)))
    assert fast.delta_ci[1] < 0 and fast.delta_excludes_zero
    again = paired_bootstrap(base, other, n_resamples=300, seed=5)
    assert again.delta_ci == fast.delta_ci  # seeded


def test_randomization_vectorised_equals_generic_path_and_extremes() -> None:
    rng = np.random.default_rng(4)
    base = rng.uniform(0, 1, 80)
    other = base + rng.normal(0.01, 0.1, 80)
    fast = approximate_randomization(base, other, trials=500, seed=12345)
    slow = approximate_randomization(base, other, statistic=_loop_mean(), trials=500, seed=12345)
    assert fast.p_value == pytest.approx(slow.p_value)
    assert 0 < fast.p_value <= 1
    # Identical systems: every trial is as extreme as the observed 0 -> p = 1.
    assert approximate_randomization(base, base, trials=200).p_value == 1.0
    # A large consistent drop: no trial reaches it -> p = 1 / (trials + 1).
    assert approximate_randomization(base, base - 0.5, trials=200).p_value == pytest.approx(1 / 201)
    one_sided = approximate_randomization(base, base - 0.5, trials=200, alternative="less")
    assert one_sided.p_value == pytest.approx(1 / 201)
    assert approximate_randomization(base, base - 0.5, trials=200, alternative="greater").p_value == 1.0


def test_randomization_defaults_are_radeval_s() -> None:
    result = approximate_randomization([0.1, 0.2, 0.3], [0.2, 0.2, 0.4])
    assert result.details["trials"] == 10_000 and result.details["seed"] == 12345
    assert result.alternative == "two-sided"


def _bleu_corpus(refs: dict[str, str], hyps: dict[str, str]) -> list[float]:
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(4).compute_score({k: [v] for k, v in refs.items()}, {k: [v] for k, v in hyps.items()}, verbose=0)
    return score


def test_bleu_recomputed_from_counts_equals_pycocoevalcap() -> None:
    refs = {"1": "the heart is normal in size . lungs are clear .", "2": "no pleural effusion or pneumothorax .",
            "3": "mild cardiomegaly . small left pleural effusion .", "4": "lungs are clear"}
    hyps = {"1": "heart size is normal . the lungs are clear .", "2": "no pneumothorax .",
            "3": "there is mild cardiomegaly with a small effusion .", "4": "clear lungs bilaterally no effusion"}
    ids = sorted(refs)
    rows = bleu_sufficient_statistics(refs, hyps, ids)
    expected = _bleu_corpus(refs, hyps)
    for n in range(1, 5):
        assert bleu_statistic(n).aggregate(rows) == pytest.approx(expected[n - 1], rel=1e-12)
    # A resample (with repeated studies) equals pycocoevalcap on the duplicated corpus.
    pick = ["1", "1", "3", "4"]
    dup_refs = {f"{s}#{k}": refs[s] for k, s in enumerate(pick)}
    dup_hyps = {f"{s}#{k}": hyps[s] for k, s in enumerate(pick)}
    index = [ids.index(s) for s in pick]
    assert bleu_statistic(4).aggregate(rows[index]) == pytest.approx(_bleu_corpus(dup_refs, dup_hyps)[3], rel=1e-12)


def test_bleu_recomputation_on_real_generated_reports() -> None:
    folder = DATA / "generated_reports" / "r2gen_iu_xray"
    if not (folder / "gts.csv").exists():
        pytest.skip("shared data not available")
    gts = (folder / "gts.csv").read_text(encoding="utf-8").splitlines()[:150]
    res = (folder / "res.csv").read_text(encoding="utf-8").splitlines()[:150]
    refs = {str(i): t for i, t in enumerate(gts)}
    hyps = {str(i): t for i, t in enumerate(res)}
    rows = bleu_sufficient_statistics(refs, hyps, list(refs))
    expected = _bleu_corpus(refs, hyps)
    assert [bleu_statistic(n).aggregate(rows) for n in range(1, 5)] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------- compare_runs


def test_compare_runs_p_values_are_scipy_s_on_the_score_columns(tmp_path: Path) -> None:
    full = load_run(synthetic_run(tmp_path / "full", quality=0.8, seed=1))
    ablated = load_run(synthetic_run(tmp_path / "ablated", quality=0.6, seed=2))
    comparison = compare_runs(full, [ablated], metrics=["bleu_1", "rouge_l", "chexpert_f1"])
    for metric, column in (("bleu_1", "bleu_1"), ("rouge_l", "rouge_l"), ("chexpert_f1", "chexpert_example_f1")):
        entry = comparison.entries[("ablated", metric)]
        expected = wilcoxon(ablated.scores[column], full.scores[column], alternative="less")
        assert entry.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)
        assert entry.per_sample_metric == column
    assert comparison.values["full"]["chexpert_f1"] == full.summary["chexpert_f1"]
    assert any("chexpert_example_f1" in note for note in comparison.notes)
    holm_cmp = compare_runs(full, [ablated], metrics=["bleu_1", "rouge_l"], correction="holm")
    raw = [holm_cmp.entries[("ablated", m)].p_value for m in ("bleu_1", "rouge_l")]
    assert [holm_cmp.entries[("ablated", m)].p_adjusted for m in ("bleu_1", "rouge_l")] == pytest.approx(holm(raw))


def test_compare_runs_on_different_studies_lists_the_ids(tmp_path: Path) -> None:
    full = load_run(synthetic_run(tmp_path / "full", quality=0.8, seed=1, ids=["a", "b", "c", "d"]))
    other = load_run(synthetic_run(tmp_path / "other", quality=0.6, seed=2, ids=["a", "b", "c", "x"]))
    with pytest.raises(DataError, match=r"ids only in full: d.*ids only in other: x"):
        compare_runs(full, [other], metrics=["bleu_1"])


def test_compare_runs_recomputes_corpus_bleu_with_references(tmp_path: Path) -> None:
    refs = {"1": "the heart is normal in size .", "2": "no pleural effusion or pneumothorax .",
            "3": "mild cardiomegaly .", "4": "lungs are clear"}
    hyps_a = {"1": "heart size is normal .", "2": "no pneumothorax .", "3": "mild cardiomegaly .", "4": "lungs are clear"}
    hyps_b = {"1": "normal .", "2": "no effusion .", "3": "cardiomegaly", "4": "clear"}
    for name, hyps in (("a", hyps_a), ("b", hyps_b)):
        corpus = _bleu_corpus(refs, hyps)
        scores = pd.DataFrame({"id": list(hyps), "bleu_4": [0.1, 0.2, 0.3, 0.4]})
        write_run(tmp_path / name, scores=scores, summary={"bleu_4": corpus[3]},
                  predictions=[{"id": k, "report": v} for k, v in hyps.items()])
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    comparison = compare_runs(a, [b], metrics=["bleu_4"], test="bootstrap", references=refs, n_resamples=50)
    entry = comparison.entries[("b", "bleu_4")]
    assert entry.bootstrap is not None and "n-gram" in entry.bootstrap.statistic
    assert entry.bootstrap.base == pytest.approx(a.summary["bleu_4"], rel=1e-12)
    assert any("recomputed from n-gram counts" in note for note in comparison.notes)
    # Without references: the mean of per-sample BLEU, said in the notes.
    fallback = compare_runs(a, [b], metrics=["bleu_4"], test="bootstrap", n_resamples=50)
    assert fallback.entries[("b", "bleu_4")].bootstrap.statistic == MEAN.name
    assert any("pass references" in note for note in fallback.notes)


def test_bootstrap_and_randomisation_recompute_the_corpus_chexpert_micro_f1(tmp_path: Path) -> None:
    from sklearn.metrics import f1_score

    from boxmed_eval.metrics.chexpert import ce_scores
    from boxmed_eval.records import CHEXPERT_CLASSES
    from boxmed_eval.stats import RADEVAL_SEED
    from tests.rundir_fixtures import write_run

    rng = np.random.default_rng(3)
    n = 25
    y_true = rng.random((n, 14)) < 0.3
    runs = {}
    for name, noise in (("base", 0.25), ("other", 0.1)):
        y_pred = np.where(rng.random((n, 14)) < noise, ~y_true, y_true)
        refs = [{c: int(v) for c, v in zip(CHEXPERT_CLASSES, row)} for row in y_true]
        hyps = [{c: int(v) for c, v in zip(CHEXPERT_CLASSES, row)} for row in y_pred]
        ids = [f"s{i}" for i in range(n)]
        scores = pd.DataFrame({"id": ids, "chexpert_example_f1": rng.random(n),
                               "chexpert_tp": (y_true & y_pred).sum(axis=1), "chexpert_fp": (~y_true & y_pred).sum(axis=1),
                               "chexpert_fn": (y_true & ~y_pred).sum(axis=1)})
        summary = {"chexpert_f1": ce_scores(refs, hyps)["chexpert_f1"]}
        assert summary["chexpert_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
        runs[name] = (write_run(tmp_path / name, scores=scores, summary=summary), y_pred)

    base, other = load_run(runs["base"][0]), load_run(runs["other"][0])
    comparison = compare_runs(base, [other], metrics=["chexpert_f1"], test="bootstrap", n_resamples=200)
    entry = comparison.entries[("other", "chexpert_f1")]
    # brute force: the same study draws (over the ids in sorted order, as the pairing orders them),
    # sklearn's micro F1 on the resampled label matrices
    order = sorted(range(n), key=lambda i: f"s{i}")
    y_true = y_true[order]
    runs = {k: (path, y_pred[order]) for k, (path, y_pred) in runs.items()}
    draw = np.random.default_rng(RADEVAL_SEED)
    brute_base, brute_other = [], []
    for _ in range(200):
        index = draw.integers(0, n, size=n)
        brute_base.append(f1_score(y_true[index], runs["base"][1][index], average="micro", zero_division=0))
        brute_other.append(f1_score(y_true[index], runs["other"][1][index], average="micro", zero_division=0))
    assert entry.bootstrap.base == pytest.approx(base.summary["chexpert_f1"])
    assert entry.bootstrap.base_ci == pytest.approx(tuple(np.percentile(brute_base, [2.5, 97.5])))
    assert entry.bootstrap.other_ci == pytest.approx(tuple(np.percentile(brute_other, [2.5, 97.5])))
    assert entry.bootstrap.delta_ci == pytest.approx(
        tuple(np.percentile(np.array(brute_other) - np.array(brute_base), [2.5, 97.5])))
    assert any("TP/FP/FN" in note for note in comparison.notes)
    randomised = compare_runs(base, [other], metrics=["chexpert_f1"], test="randomization", trials=200)
    assert randomised.entries[("other", "chexpert_f1")].result.p_value is not None
