"""The demo dataset through `boxmed-eval run` with the retrieval baseline: every metric family
that runs offline writes its files, and retrieved boxes reach the grounding metric."""

import json

import pandas as pd
from click.testing import CliRunner

from boxmed_eval.cli import main


def test_demo_run_writes_every_offline_metric(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["run", "--model", "retrieval", "--dataset", "demo", "--limit", "20",
                                       "--metrics", "nlg,chexpert,grounding", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider", "chexpert_f1", "chexpert_macro_f1", "chexpert_example_f1",
                 "rrg_5_micro_f1", "grounding_miou", "grounding_acc_0.5"):
        assert name in summary, name
    assert summary["conventions"]["nlg_preprocessing"] if "nlg_preprocessing" in summary["conventions"] else True
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == 14 and {"accuracy", "precision", "recall", "f1"} <= set(per_class.columns)
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str})
    assert len(scores) == 20 and "grounding_miou" in scores and "chexpert_example_f1" in scores
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert any(p.get("boxes") for p in predictions)
    # Retrieval by image must beat chance on the demo's findings (images and text agree).
    assert summary["chexpert_f1"] > 0.25
