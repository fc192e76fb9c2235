"""CE metric conventions on hand-computed examples, sklearn equality, the metric end to end."""

from __future__ import annotations

import random

import numpy as np
import pytest

from boxmed_eval.metrics.base import METRICS, compute_metrics
from boxmed_eval.metrics.chexpert import FIVE_CLASSES, binarize, ce_scores, example_based, per_class_table
from boxmed_eval.metrics.labelers import LABELERS, Labeler
from boxmed_eval.records import CHEXPERT_CLASSES


def labels(**values: int) -> dict:
    names = {"CM": "Cardiomegaly", "PE": "Pleural Effusion", "ED": "Edema", "AT": "Atelectasis",
             "NF": "No Finding", "PX": "Pneumothorax", "SD": "Support Devices"}
    row = {c: None for c in CHEXPERT_CLASSES}
    row.update({names[k]: v for k, v in values.items()})
    return row


# 3 reports x 14 labels; expected values worked out by hand in the comments.
REFS = [labels(CM=1, PE=1, ED=0), labels(NF=1), labels(PX=1, PE=-1, SD=1)]
HYPS = [labels(CM=1, PE=-1, AT=1), labels(NF=1), labels(PX=0, PE=1, SD=1)]


def test_r2gen_micro_and_macro_by_hand() -> None:
    s = ce_scores(REFS, HYPS)
    # positives only (1): report 1 TP=CM FP=AT FN=PE; report 2 TP=NF; report 3 TP=SD FP=PE FN=PX
    # -> TP 3, FP 2, FN 2
    assert s["chexpert_precision"] == pytest.approx(3 / 5)
    assert s["chexpert_recall"] == pytest.approx(3 / 5)
    assert s["chexpert_f1"] == pytest.approx(3 / 5)
    # macro over 14: CM, NF, SD score 1; PE, AT, PX score 0; the 8 classes never positive score 0
    assert s["chexpert_macro_precision"] == pytest.approx(3 / 14)
    assert s["chexpert_macro_recall"] == pytest.approx(3 / 14)
    assert s["chexpert_macro_f1"] == pytest.approx(3 / 14)


def test_example_based_by_hand() -> None:
    s = ce_scores(REFS, HYPS)
    # per report (P, R, F1): (1/2, 1/2, 1/2), (1, 1, 1), (1/2, 1/2, 1/2)
    assert s["chexpert_example_precision"] == pytest.approx(2 / 3)
    assert s["chexpert_example_recall"] == pytest.approx(2 / 3)
    assert s["chexpert_example_f1"] == pytest.approx(2 / 3)
    # 0/0 -> 0: no positive on either side
    p, r, f = example_based(np.zeros((1, 14), dtype=np.int64), np.zeros((1, 14), dtype=np.int64))
    assert (p[0], r[0], f[0]) == (0.0, 0.0, 0.0)


def test_chexbert_rrg_by_hand() -> None:
    s = ce_scores(REFS, HYPS)
    # uncertain = positive: report 1 TP CM,PE FP AT; report 2 TP NF; report 3 TP PE,SD FN PX
    # -> TP 5, FP 1, FN 1 -> F1 = 10/12
    assert s["rrg_14_micro_f1"] == pytest.approx(10 / 12)
    # classes scoring 1: CM, PE, NF, SD -> 4/14
    assert s["rrg_14_macro_f1"] == pytest.approx(4 / 14)
    # 5 classes (CM, ED, CO, AT, PE): TP CM, PE, PE; FP AT -> micro 6/7; macro CM=1, PE=1 -> 2/5
    assert s["rrg_5_micro_f1"] == pytest.approx(6 / 7)
    assert s["rrg_5_macro_f1"] == pytest.approx(2 / 5)
    # names never claim a labeler that did not run: chexbert_* only with labels from CheXbert
    assert not any(name.startswith("chexbert_") for name in s)
    by_chexbert = ce_scores(REFS, HYPS, labeler="chexbert")
    assert by_chexbert["chexbert_14_micro_f1"] == by_chexbert["rrg_14_micro_f1"] == pytest.approx(10 / 12)


def test_per_class_table_by_hand() -> None:
    table = per_class_table(binarize(REFS, uncertain_positive=False), binarize(HYPS, uncertain_positive=False))
    assert list(table.columns) == ["category", "accuracy", "precision", "recall", "f1", "support"]
    assert list(table["category"]) == list(CHEXPERT_CLASSES)
    pe = table.set_index("category").loc["Pleural Effusion"]
    # truth [1, 0, 0] (the -1 of report 3 is not positive), prediction [0, 0, 1]
    assert (pe["accuracy"], pe["precision"], pe["recall"], pe["f1"], pe["support"]) == (pytest.approx(1 / 3), 0, 0, 0, 1)
    cm = table.set_index("category").loc["Cardiomegaly"]
    assert (cm["accuracy"], cm["f1"], cm["support"]) == (1.0, 1.0, 1)


@pytest.mark.parametrize("seed, n, p_blank", [(7, 60, 0.4), (1, 5, 0.9), (2, 1, 1.0), (3, 200, 0.2)])
def test_equal_to_sklearn_and_naive_loops_on_random_labels(seed: int, n: int, p_blank: float) -> None:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    rng = random.Random(seed)

    def draw() -> int | None:
        return None if rng.random() < p_blank else rng.choice([1, 0, -1])

    refs = [{c: draw() for c in CHEXPERT_CLASSES} for _ in range(n)]
    hyps = [{c: draw() for c in CHEXPERT_CLASSES} for _ in range(n)]
    s = ce_scores(refs, hyps)
    t = np.array([[int(r[c] == 1) for c in CHEXPERT_CLASSES] for r in refs])
    p = np.array([[int(h[c] == 1) for c in CHEXPERT_CLASSES] for h in hyps])
    for average, prefix in (("micro", "chexpert"), ("macro", "chexpert_macro")):
        sk = precision_recall_fscore_support(t, p, average=average, zero_division=0)[:3]
        assert (s[f"{prefix}_precision"], s[f"{prefix}_recall"], s[f"{prefix}_f1"]) == pytest.approx(sk)
    table = per_class_table(t, p).set_index("category")
    for j, name in enumerate(CHEXPERT_CLASSES):
        sk = precision_recall_fscore_support(t[:, j], p[:, j], average="binary", zero_division=0)[:3]
        assert tuple(table.loc[name, ["precision", "recall", "f1"]]) == pytest.approx(sk)
    t, p = t.tolist(), p.tolist()
    tp = sum(a & b for ra, rb in zip(t, p) for a, b in zip(ra, rb))
    fp = sum((1 - a) & b for ra, rb in zip(t, p) for a, b in zip(ra, rb))
    fn = sum(a & (1 - b) for ra, rb in zip(t, p) for a, b in zip(ra, rb))
    assert s["chexpert_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    example = []
    for ra, rb in zip(t, p):
        tpi = sum(a & b for a, b in zip(ra, rb))
        fpi = sum((1 - a) & b for a, b in zip(ra, rb))
        fni = sum(a & (1 - b) for a, b in zip(ra, rb))
        example.append(0.0 if 2 * tpi + fpi + fni == 0 else 2 * tpi / (2 * tpi + fpi + fni))
    assert s["chexpert_example_f1"] == pytest.approx(sum(example) / len(example))
    t5 = [[int(r[c] in (1, -1)) for c in FIVE_CLASSES] for r in refs]
    p5 = [[int(h[c] in (1, -1)) for c in FIVE_CLASSES] for h in hyps]
    assert s["rrg_5_macro_f1"] == pytest.approx(f1_score(t5, p5, average="macro", zero_division=0))
    assert s["rrg_5_micro_f1"] == pytest.approx(f1_score(t5, p5, average="micro", zero_division=0))
    t14 = [[int(r[c] in (1, -1)) for c in CHEXPERT_CLASSES] for r in refs]
    p14 = [[int(h[c] in (1, -1)) for c in CHEXPERT_CLASSES] for h in hyps]
    assert s["rrg_14_micro_f1"] == pytest.approx(f1_score(t14, p14, average="micro", zero_division=0))
    assert s["rrg_14_macro_f1"] == pytest.approx(f1_score(t14, p14, average="macro", zero_division=0))


class _TableLabeler(Labeler):
    """Looks reports up in a fixed table: lets the metric be checked without any real labeler."""

    TABLE = {"r1": REFS[0], "r2": REFS[1], "r3": REFS[2], "h1": HYPS[0], "h2": HYPS[1], "h3": HYPS[2]}

    def label(self, reports: list[str]) -> list[dict]:
        return [dict(self.TABLE[r]) for r in reports]


if "test-table" not in LABELERS.names():
    LABELERS.register("test-table")(_TableLabeler)


def test_metric_end_to_end_with_a_labeler_option() -> None:
    refs = {"s1": "r1", "s2": "r2", "s3": "r3"}
    hyps = {"s1": "h1", "s2": "h2", "s3": "h3"}
    result = compute_metrics(["chexpert"], refs, hyps, options={"chexpert": {"labeler": "test-table", "dataset": "x"}})
    assert set(METRICS.get("chexpert").provides) <= set(result.corpus)
    assert result.corpus["chexpert_f1"] == pytest.approx(3 / 5)
    assert result.per_sample["chexpert_example_f1"] == pytest.approx({"s1": 0.5, "s2": 1.0, "s3": 0.5})
    assert result.conventions["chexpert_labeler"] == "test-table"
    labels_csv = result.tables["chexpert_labels"]
    assert len(labels_csv) == 6 and set(labels_csv["side"]) == {"reference", "prediction"}
    assert labels_csv.set_index(["id", "side"]).loc[("s3", "reference"), "Pleural Effusion"] == -1


def test_metric_with_rules_labeler_on_text() -> None:
    refs = {"a": "Moderate cardiomegaly. Small left pleural effusion.", "b": "No acute cardiopulmonary process."}
    hyps = {"a": "Mild cardiomegaly. No pleural effusion.", "b": ""}  # an empty generation scores 0
    result = compute_metrics(["chexpert"], refs, hyps)
    assert result.conventions["chexpert_labeler"] == "rules"
    # a: ref {CM, PE}, hyp {CM} -> F1 2/3; b: ref {No Finding}, empty hyp -> 0
    assert result.per_sample["chexpert_example_f1"] == pytest.approx({"a": 2 / 3, "b": 0.0})
    assert result.corpus["chexpert_f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))


def test_missing_chexbert_checkpoint_skips_with_the_fix(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXMED_CHEXBERT_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    result = compute_metrics(["chexpert"], {"a": "x"}, {"a": "y"}, options={"chexpert": {"labeler": "chexbert"}})
    assert not result.corpus
    assert any("--checkpoint" in m and "BOXMED_CHEXBERT_CHECKPOINT" in m for m in result.messages)


def test_reference_labels_from_the_dataset() -> None:
    from boxmed_eval.errors import DataError
    from boxmed_eval.records import Study

    studies = {f"s{k}": Study(id=f"s{k}", image_paths=[], findings="ignored", labels=REFS[k - 1]) for k in (1, 2, 3)}
    refs = {i: "ignored" for i in studies}
    hyps = {"s1": "h1", "s2": "h2", "s3": "h3"}
    result = compute_metrics(["chexpert"], refs, hyps, studies=studies,
                             options={"chexpert": {"labeler": "test-table", "reference_labels": "dataset"}})
    assert result.corpus["chexpert_f1"] == pytest.approx(3 / 5)
    studies["s2"].labels = None
    with pytest.raises(DataError, match="no CheXpert labels"):
        compute_metrics(["chexpert"], refs, hyps, studies=studies,
                        options={"chexpert": {"labeler": "test-table", "reference_labels": "dataset"}})
