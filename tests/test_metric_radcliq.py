"""RadCliQ: the published CXR-Report-Metric composites reproduced from real component columns,
its BLEU-2 component, and the family's behaviour when its component models are absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boxmed_eval.metrics import METRICS, compute_metrics
from boxmed_eval.metrics.radcliq import RADCLIQ_V0, RADCLIQ_V1, cxr_bleu2, cxr_tokens, radcliq_from_components
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def report_scores() -> pd.DataFrame:
    return pd.read_csv(shared_data("generated_reports", "moerad_iu_xray", "report_scores.csv"))


def test_reproduces_cxr_report_metric_radcliq(report_scores: pd.DataFrame) -> None:
    d = report_scores
    assert len(d) == 590
    # CXR-Report-Metric holds BERTScore as float32 (a torch tensor) when it builds the inputs
    bert = d["bertscore"].to_numpy(np.float32)
    out = radcliq_from_components(d["radgraph_combined"], bert, d["semb_score"], d["bleu_score"])
    np.testing.assert_allclose(out["radcliq_v0"], d["RadCliQ-v0"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["radcliq_v1"], d["RadCliQ-v1"], rtol=0, atol=1e-12)
    # the column as printed (float64 parse of the float32 text) is within 1e-6 as well
    loose = radcliq_from_components(d["radgraph_combined"], d["bertscore"], d["semb_score"], d["bleu_score"])
    assert np.abs(loose["radcliq_v0"] - d["RadCliQ-v0"]).max() < 1e-6


def test_bleu2_component_equals_cxr_report_metric(report_scores: pd.DataFrame) -> None:
    root = shared_data("generated_reports", "moerad_iu_xray")
    gts, preds = pd.read_csv(root / "gts.csv"), pd.read_csv(root / "preds.csv")
    assert (preds["report"] == report_scores["report"]).all()  # same order as report_scores.csv
    ours = np.array([cxr_bleu2(g, p) for g, p in zip(gts["report"], preds["report"])])
    np.testing.assert_allclose(ours, report_scores["bleu_score"], rtol=0, atol=1e-12)
    # the set includes reports with no matching bigram (smoothing) — the case that needs care
    assert (ours < 0.1).any()


def test_bleu2_hand_worked() -> None:
    assert cxr_tokens("No effusion.Heart  normal.") == ["no", "effusion", ".heart", "normal", "."]
    assert cxr_bleu2("the heart is normal .", "the heart is normal .") == pytest.approx(1.0)
    assert cxr_bleu2("a b", "c d") == 0.0  # no unigram match
    # hyp "a c" vs ref "a b": p1 = 1/2, p2 = 0 -> 0.1/1 smoothed; equal lengths: BP = 1
    assert cxr_bleu2("a b", "a c") == pytest.approx((0.5 * 0.1) ** 0.5)
    # short hypothesis: BP = exp(1 - 4/2)
    assert cxr_bleu2("a b c d", "a b") == pytest.approx(np.exp(1 - 2))


def test_constants_shape_and_direction() -> None:
    # higher components -> lower (better) RadCliQ for both versions
    low = radcliq_from_components([0.1], [0.1], [0.1], [0.1])
    high = radcliq_from_components([0.9], [0.9], [0.9], [0.9])
    assert high["radcliq_v0"][0] < low["radcliq_v0"][0]
    assert high["radcliq_v1"][0] < low["radcliq_v1"][0]
    assert len(RADCLIQ_V0.coef) == len(RADCLIQ_V1.coef) == 4
    with pytest.raises(ValueError, match="shape"):
        RADCLIQ_V0.predict(np.zeros((2, 3)))


def test_family_unavailable_names_each_component(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in ("BOXMED_CHEXBERT_CHECKPOINT", "BOXMED_BERTSCORE_CXR_MODEL", "BOXMED_RADGRAPH_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = METRICS.get("radcliq")()
    ok, reason = metric.available()
    assert not ok
    assert "component bertscore" in reason and "bertscore.model" in reason.replace("radcliq.", "")
    assert "component sembscore" in reason
    refs = {"a": "No effusion.", "b": "Mild cardiomegaly."}
    hyps = {"a": "No pleural effusion.", "b": "Heart is normal."}
    result = compute_metrics(["radcliq"], refs, hyps)
    assert not any(k.startswith("radcliq_v") for k in result.corpus)
    assert any("radcliq" in m and "skipped" in m for m in result.messages)


def test_family_wires_components_by_id(report_scores: pd.DataFrame) -> None:
    """With the components' per-report scores given (CXR-Report-Metric's own columns), the family
    computes the composite per study id and its corpus figures, 1/RadCliQ-v1 included."""
    from boxmed_eval.metrics.base import Metric, MetricResult

    root = shared_data("generated_reports", "moerad_iu_xray")
    gts, preds = pd.read_csv(root / "gts.csv"), pd.read_csv(root / "preds.csv")
    ids = list(gts["study_id"])[:40][::-1]  # an order different from the file's
    rows = {sid: k for k, sid in enumerate(gts["study_id"])}

    class Given(Metric):
        def __init__(self, name: str, column: str, dtype: type = np.float64) -> None:
            super().__init__()
            self.metric_name, self.column, self.dtype = name, column, dtype

        def compute(self, references, hypotheses, **_):  # type: ignore[override]
            values = report_scores[self.column].to_numpy(self.dtype)
            return MetricResult(per_sample={self.metric_name: {i: float(values[rows[i]]) for i in references}})

    metric = METRICS.get("radcliq")()
    metric._components = {"bertscore": Given("bertscore_cxr", "bertscore", np.float32),
                          "sembscore": Given("sembscore", "semb_score"),
                          "radgraph": Given("radgraph_combined", "radgraph_combined")}
    refs = {i: gts["report"][rows[i]] for i in ids}
    hyps = {i: preds["report"][rows[i]] for i in ids}
    result = metric.compute(refs, hyps)
    for i in ids:
        assert result.per_sample["radcliq_v0"][i] == pytest.approx(report_scores["RadCliQ-v0"][rows[i]], abs=1e-12)
        assert result.per_sample["radcliq_v1"][i] == pytest.approx(report_scores["RadCliQ-v1"][rows[i]], abs=1e-12)
        assert result.per_sample["radcliq_bleu_2"][i] == pytest.approx(report_scores["bleu_score"][rows[i]], abs=1e-12)
    v1 = np.mean([report_scores["RadCliQ-v1"][rows[i]] for i in ids])
    assert result.corpus["radcliq_v1"] == pytest.approx(v1, abs=1e-12)
    assert result.corpus["radcliq_v1_inverse"] == pytest.approx(1 / v1)
