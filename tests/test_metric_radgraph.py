"""RadGraph F1 variants on hand-made annotations (values worked out from the radgraph package's
rewards.py and CXR-Report-Metric's radgraph_evaluate_model.py), and the families that cannot
run without their weights (radgraph, ratescore) skipping with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from boxmed_eval.metrics import METRICS, compute_metrics
from boxmed_eval.metrics.radgraph import complete_items, partial_items, radgraph_scores, set_f1

# reference: "mild cardiomegaly . no effusion"   (cardiomegaly modified by mild)
REFERENCE = {"entities": {
    "1": {"tokens": "mild", "label": "OBS-DP", "relations": [["modify", "2"]]},
    "2": {"tokens": "cardiomegaly", "label": "OBS-DP", "relations": []},
    "3": {"tokens": "effusion", "label": "OBS-DA", "relations": []},
}}
# hypothesis: "Mild cardiomegaly" with the relation, effusion present (wrong label)
HYPOTHESIS = {"entities": {
    "1": {"tokens": "Mild", "label": "OBS-DP", "relations": [["modify", "2"]]},
    "2": {"tokens": "cardiomegaly", "label": "OBS-DP", "relations": []},
    "3": {"tokens": "effusion", "label": "OBS-DP", "relations": []},
}}


def test_set_f1() -> None:
    assert set_f1({1, 2}, {2, 3}) == pytest.approx(0.5)
    assert set_f1(set(), {1}) == 0.0 and set_f1(set(), set()) == 0.0


def test_variants_hand_worked() -> None:
    s = radgraph_scores(REFERENCE, HYPOTHESIS)
    # simple: ref {(mild,DP),(cardiomegaly,DP),(effusion,DA)}, hyp {(Mild,DP),(cardiomegaly,DP),(effusion,DP)}
    # -> 1 match of 3 and 3: F1 = 1/3 (tokens are case sensitive here)
    assert s["simple"] == pytest.approx(1 / 3)
    # partial: (mild,DP,True) vs (Mild,DP,True) differ; cardiomegaly matches; effusion labels differ -> 1/3
    assert s["partial"] == pytest.approx(1 / 3)
    # complete lowercases relation items: (mild,DP,modify,cardiomegaly) matches; + cardiomegaly -> 2/3
    assert complete_items(HYPOTHESIS) & complete_items(REFERENCE) == {
        ("mild", "OBS-DP", "modify", "cardiomegaly"), ("cardiomegaly", "OBS-DP")}
    assert s["complete"] == pytest.approx(2 / 3)
    # combined: entity F1 1/3; relation ((mild,DP),(cardiomegaly,DP),modify) vs (Mild...) no match -> 0
    assert s["combined"] == pytest.approx((1 / 3 + 0) / 2)
    assert radgraph_scores(REFERENCE, REFERENCE) == {"simple": 1.0, "partial": 1.0, "complete": 1.0,
                                                     "combined": 1.0}
    assert partial_items({"entities": {}}) == set()


def test_radgraph_without_model_says_what_to_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.delenv("BOXMED_RADGRAPH_MODEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = METRICS.get("radgraph")().available()
    assert not ok and "--metric-option radgraph.model=PATH" in reason and "BOXMED_RADGRAPH_MODEL" in reason
    ok, reason = METRICS.get("radgraph")(model_dir=str(tmp_path)).available()  # DIR/<model_type>/ layout
    assert not ok and "weights.th" in reason and str(tmp_path / "radgraph") in reason
    with pytest.raises(Exception, match="variant"):
        METRICS.get("radgraph")(variant="strict")
    with pytest.raises(Exception, match="model_type"):
        METRICS.get("radgraph")(model_type="echograph")


def test_unavailable_families_do_not_block_others(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BOXMED_RADGRAPH_MODEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs = {"a": "No effusion.", "b": "Mild cardiomegaly."}
    hyps = {"a": "No pleural effusion.", "b": "Heart is normal."}
    result = compute_metrics(["ratescore", "radgraph", "chexpert"], refs, hyps)
    assert "chexpert_f1" in result.corpus
    assert not any(k.startswith(("radgraph", "ratescore")) for k in result.corpus)
    assert any("ratescore" in m and "ratescore.model=DIR" in m for m in result.messages)
    assert any("radgraph" in m and "skipped" in m for m in result.messages)
