"""NLG metrics: identical to pycocoevalcap / rouge-score on real reports, R2Gen preprocessing,
METEOR robustness (newlines, '|||', empty texts, no Java, a jar that never answers)."""

from __future__ import annotations

import math
import random
import stat
from pathlib import Path

import pandas as pd
import pytest

from boxmed_eval.metrics import meteor as meteor_module
from boxmed_eval.metrics.base import METRICS, compute_metrics
from boxmed_eval.metrics.meteor import MeteorError, compute_meteor, meteor_available
from boxmed_eval.metrics.nlg import bleu_scores, cider_scores, lcs_length, rouge_l_scores, rouge_score_f
from boxmed_eval.metrics.preprocess import (clean_report_iu_xray, clean_report_mimic_cxr, preprocess_r2gen,
                                            preprocess_r2gen_iu, preprocess_reports)

GENERATED = Path(__file__).resolve().parents[2] / "shared" / "data" / "generated_reports"
needs_java = pytest.mark.skipif(not meteor_available()[0], reason="no Java runtime for METEOR")


def _real_pairs() -> tuple[list[str], list[str]]:
    """R2Gen-cleaned IU X-Ray generations (590) + MoERad raw-text generations (590)."""
    if not (GENERATED / "r2gen_iu_xray" / "gts.csv").is_file() or not (GENERATED / "moerad_iu_xray" / "gts.csv").is_file():
        pytest.skip("../shared/data/generated_reports is absent")
    # gts.csv / res.csv of the R2Gen run are one report per line, not CSV.
    r2gen_refs = (GENERATED / "r2gen_iu_xray" / "gts.csv").read_text(encoding="utf-8").splitlines()
    r2gen_hyps = (GENERATED / "r2gen_iu_xray" / "res.csv").read_text(encoding="utf-8").splitlines()
    moerad_refs = pd.read_csv(GENERATED / "moerad_iu_xray" / "gts.csv")["report"].tolist()
    moerad_hyps = pd.read_csv(GENERATED / "moerad_iu_xray" / "preds.csv")["report"].tolist()
    assert len(r2gen_refs) == len(r2gen_hyps) == len(moerad_refs) == len(moerad_hyps) == 590
    return r2gen_refs + moerad_refs, r2gen_hyps + moerad_hyps


# ---------------------------------------------------------------------------- exactness


def test_python_scorers_equal_pycocoevalcap_and_rouge_score_on_real_reports() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from rouge_score import rouge_scorer

    refs, hyps = _real_pairs()
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    our_corpus, our_per = bleu_scores(refs, hyps)
    assert our_corpus == list(corpus)
    assert our_per == [list(p) for p in per]
    score, scores = Rouge().compute_score(gts, res)
    assert rouge_l_scores(refs, hyps) == (score, list(scores))
    score, scores = Cider().compute_score(gts, res)
    assert cider_scores(refs, hyps) == (score, list(scores))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(r, h) for r, h in zip(refs, hyps)]
    ours = rouge_score_f(refs, hyps)
    assert ours["rouge1_f"] == [e["rouge1"].fmeasure for e in expected]
    assert ours["rouge2_f"] == [e["rouge2"].fmeasure for e in expected]
    assert ours["rougeL_f"] == [e["rougeL"].fmeasure for e in expected]


@needs_java
def test_preprocess_none_is_identical_to_pycocoevalcap_including_sharded_meteor() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _real_pairs()
    ids = [f"study{i}" for i in range(len(refs))]
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    expected: dict[str, tuple[float, list[float]]] = {}
    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        expected[f"bleu_{k + 1}"] = (corpus[k], per[k])
    meteor = Meteor()
    expected["meteor"] = meteor.compute_score(gts, res)
    del meteor
    expected["rouge_l"] = Rouge().compute_score(gts, res)
    expected["cider"] = Cider().compute_score(gts, res)

    # two METEOR shards: the statistics come from two JVMs, the EVAL from one
    result = compute_metrics(["nlg"], dict(zip(ids, refs)), dict(zip(ids, hyps)),
                             options={"nlg": {"preprocess": "none", "meteor_shards": 2}})
    assert result.conventions["nlg_preprocessing"] == "none"
    for name, (corpus_value, per_sample) in expected.items():
        assert result.corpus[name] == float(corpus_value), name
        assert [result.per_sample[name][i] for i in ids] == [float(x) for x in per_sample], name
    assert set(result.per_sample) >= {"rouge1_f", "rouge2_f", "rougeL_f"}


def test_lcs_length_matches_dynamic_programming() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert lcs_length(a, b) == table[-1][-1]


# ---------------------------------------------------------------------------- preprocessing


def test_r2gen_cleaning_quirks() -> None:
    text = "1. The heart is normal. 2. Nodule 3.5 cm; see: <comparison> @ right. Effusion?"
    cleaned = preprocess_r2gen(text)
    assert cleaned == "the heart is normal . nodule 35 cm see comparison right . effusion ."
    # the `:-\[` range deletes ;<=>?@ and would delete upper case (text is lower-cased first)
    assert clean_report_iu_xray("A;b<c=d>e?f@g") == "abcdefg ."
    # the MIMIC variant also handles newlines and repeated underscores
    assert clean_report_mimic_cxr("Lungs clear.\nNo ___ effusion.") == "lungs clear . no  effusion ."
    assert preprocess_r2gen("Lungs clear.\nNo ___ effusion.") == "lungs clear . no effusion ."
    with pytest.raises(Exception, match="preprocess"):
        METRICS.get("nlg")(preprocess="stem")


def test_r2gen_preprocessing_reproduces_r2gen_ground_truth_lines() -> None:
    """MoERad's raw references, cleaned here, against the same 590 studies as an R2Gen run wrote
    them (R2Gen maps rare words to <unk> and cuts long reports: compare around those)."""
    if not (GENERATED / "moerad_iu_xray" / "gts.csv").is_file():
        pytest.skip("../shared/data/generated_reports is absent")
    raw = pd.read_csv(GENERATED / "moerad_iu_xray" / "gts.csv")["report"].tolist()
    r2gen_lines = (GENERATED / "r2gen_iu_xray" / "gts.csv").read_text(encoding="utf-8").splitlines()
    exact = 0
    for text, line in zip(raw, r2gen_lines):
        ours, theirs = preprocess_r2gen_iu(text).split(), line.split()
        assert len(theirs) <= len(ours)
        assert all(t == "<unk>" or t == o for o, t in zip(ours, theirs)), (text, line)
        exact += ours == theirs
        assert preprocess_r2gen(text) == preprocess_r2gen_iu(text)
    assert exact >= 470  # the rest hold <unk> or were cut at R2Gen's max_seq_length


def test_preprocess_lower_and_none() -> None:
    texts = {"a": "Heart  NORMAL.\nLungs clear.", "b": float("nan")}  # type: ignore[dict-item]
    assert preprocess_reports(texts, "lower") == {"a": "heart normal. lungs clear.", "b": ""}
    assert preprocess_reports({"a": "X\nY"}, "none") == {"a": "X\nY"}


# ---------------------------------------------------------------------------- robustness


@needs_java
def test_meteor_survives_newlines_separators_and_empty_texts() -> None:
    refs = ["the heart is normal.\nlungs are clear.", "no ||| effusion", "mild cardiomegaly", "", "lungs clear"]
    hyps = ["the heart is normal.\r\nthe lungs are clear.", "no effusion ||| seen", "", "normal", "lungs clear"]
    scores = compute_meteor(refs, hyps, timeout=120)
    corpus, per = scores.corpus, scores.per_segment
    assert not scores.failed
    assert len(per) == 5 and all(math.isfinite(x) for x in per + [corpus])
    assert per[2] == 0.0 and per[3] == 0.0  # empty hypothesis / empty reference
    assert per[0] > 0.5 and per[4] > 0.9
    # same as the clean texts
    clean = compute_meteor(
        ["the heart is normal. lungs are clear.", "no  effusion"], ["the heart is normal.  the lungs are clear.",
                                                                   "no effusion seen"], timeout=120)
    assert clean.per_segment == per[:2]


@needs_java
def test_nlg_with_empty_hypotheses_and_empty_references() -> None:
    refs = {"a": "Heart size normal.", "b": "No effusion.", "c": ""}
    hyps = {"a": "", "b": "", "c": ""}
    result = compute_metrics(["nlg"], refs, hyps, options={"nlg": {"preprocess": "none"}})
    for name in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "rouge1_f", "rougeL_f"):
        assert result.per_sample[name]["a"] == pytest.approx(0.0, abs=1e-6), name
    # R2Gen cleaning turns an empty report into " ." (one token): tiny scores, nothing breaks
    cleaned = compute_metrics(["nlg"], refs, hyps)
    assert all(0.0 <= v < 0.05 for v in cleaned.per_sample["bleu_4"].values())
    only_empty = compute_metrics(["nlg"], {"a": ""}, {"a": "lungs clear"}, options={"nlg": {"preprocess": "none"}})
    assert "cider" not in only_empty.corpus
    assert any("cider" in m for m in only_empty.messages)


def test_missing_java_names_the_skipped_metric_and_computes_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meteor_module, "java_executable", lambda: None)
    result = compute_metrics(["nlg"], {"a": "heart normal"}, {"a": "heart is normal"})
    assert "meteor" not in result.corpus
    assert any("meteor" in m and "Java" in m for m in result.messages)
    assert {"bleu_1", "rouge_l", "cider", "rouge1_f"} <= set(result.corpus)


def test_a_jar_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_java = tmp_path / "java"
    fake_java.write_text("#!/bin/sh\nexec sleep 60\n")
    fake_java.chmod(fake_java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(meteor_module, "java_executable", lambda: str(fake_java))
    with pytest.raises(MeteorError, match="timeout"):
        compute_meteor(["a b"], ["a b"], timeout=2, filter_paraphrases=False)
    result = compute_metrics(["nlg"], {"a": "heart normal"}, {"a": "heart normal"},
                             options={"nlg": {"meteor_timeout": 2, "meteor_filter_paraphrases": False}})
    assert "meteor" not in result.corpus and any("meteor" in m for m in result.messages)
    assert result.corpus["bleu_1"] > 0.99


def test_paraphrase_subset_keeps_only_entries_made_of_corpus_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    table = tmp_path / "para.gz"
    entries = [("0.1", "the heart", "cardiac"), ("0.2", "heart", "the heart"), ("0.3", "lung", "lungs"),
               ("0.4", "don 't", "do not"), ("0.5", "heart", "core")]
    with gzip.open(table, "wt", encoding="utf-8") as handle:
        handle.write("".join(f"{p}\n{a}\n{b}\n" for p, a, b in entries))
    monkeypatch.setenv("BOXMED_CACHE", str(tmp_path / "cache"))
    index = meteor_module.ParaphraseIndex.cached(table)
    assert (tmp_path / "cache").is_dir()
    subset = index.subset(["The heart is normal.", "Lungs: don't"]).decode()
    # "lung" and "do"/"not" never occur; "'" does (and is always kept as a possible product)
    assert subset == "0\nheart\nthe heart\n"
    assert meteor_module.ParaphraseIndex.cached(table).words == index.words  # loaded from cache


def _long_generation(words: int) -> str:
    vocabulary = "the heart is normal in size lungs are clear no effusion pneumothorax".split()
    return " ".join(vocabulary[(i * 7 + i // 13) % len(vocabulary)] for i in range(words))


@needs_java
def test_meteor_scores_every_other_segment_when_the_jar_fails_on_one() -> None:
    """One huge generation exhausts the jar's heap (pycocoevalcap then dies for the whole
    corpus): that segment is NaN and named, every other one equals a run without it. A 64 MB
    heap and 4,000 words stand in for the default 2 GB and a 20,000-word generation."""
    refs = ["the heart is normal in size . the lungs are clear ."] * 6
    hyps = ["heart size normal . lungs clear .", "no effusion", _long_generation(4000), "heart normal",
            "lungs are clear", "the heart is normal"]
    scores = compute_meteor(refs, hyps, memory="64M", shards=2, timeout=120)
    assert list(scores.failed) == [2] and "OutOfMemoryError" in scores.failed[2]
    assert math.isnan(scores.per_segment[2])
    without = compute_meteor(refs[:2] + refs[3:], hyps[:2] + hyps[3:], memory="64M", shards=1, timeout=120)
    assert not without.failed
    assert scores.per_segment[:2] + scores.per_segment[3:] == without.per_segment
    assert scores.corpus == without.corpus


@needs_java
def test_nlg_names_the_study_meteor_failed_on_and_keeps_the_corpus() -> None:
    refs = {f"s{i}": "the heart is normal in size . the lungs are clear ." for i in range(4)}
    hyps = {"s0": "heart size normal .", "s1": _long_generation(4000), "s2": "lungs are clear", "s3": "no effusion"}
    result = compute_metrics(["nlg"], refs, hyps, options={"nlg": {"meteor_memory": "64M"}})
    assert math.isnan(result.per_sample["meteor"]["s1"])
    assert all(math.isfinite(result.per_sample["meteor"][i]) for i in ("s0", "s2", "s3"))
    assert math.isfinite(result.corpus["meteor"])
    message = next(m for m in result.messages if "meteor" in m)
    assert "'s1'" in message and "OutOfMemoryError" in message and "4,000 words" in message and "3 of 4" in message
    assert result.corpus["bleu_1"] > 0  # the other NLG metrics are unaffected


@needs_java
def test_a_jar_that_fails_on_every_segment_is_an_error_not_a_corpus_of_nans() -> None:
    with pytest.raises(MeteorError, match="in a row.*meteor_memory"):
        compute_meteor(["heart normal"] * 5, ["heart is normal"] * 5, memory="8M", shards=1, timeout=120)
