"""An R2Gen-codebase run on IU X-Ray logged its test metrics next to its generations
(../shared/data/generated_reports/r2gen_iu_xray): scoring those generations through
`boxmed-eval score` must give the logged numbers to the last bit."""

import json

import pandas as pd
from click.testing import CliRunner

from boxmed_eval.cli import main
from tests.conftest import shared_data


def test_score_reproduces_the_logged_r2gen_test_metrics(tmp_path):
    folder = shared_data("generated_reports", "r2gen_iu_xray")
    refs = (folder / "gts.csv").read_text(encoding="utf-8").splitlines()
    hyps = (folder / "res.csv").read_text(encoding="utf-8").splitlines()
    for name, lines in (("ref.jsonl", refs), ("pred.jsonl", hyps)):
        (tmp_path / name).write_text("".join(json.dumps({"id": str(i), "report": t}) + "\n" for i, t in enumerate(lines)))
    result = CliRunner().invoke(main, ["score", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "ref.jsonl"),
                                       "--out", str(tmp_path / "out"), "--metrics", "nlg",
                                       "--metric-option", "nlg.preprocess=none"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    log = pd.read_csv(folder / "records_iu_xray.csv")
    logged = log[log["best_model_from"] == "test"].iloc[-1]  # the run's final test evaluation
    for ours, theirs in (("bleu_1", "test_BLEU_1"), ("bleu_2", "test_BLEU_2"), ("bleu_3", "test_BLEU_3"),
                         ("bleu_4", "test_BLEU_4"), ("meteor", "test_METEOR"), ("rouge_l", "test_ROUGE_L")):
        assert summary[ours] == float(logged[theirs]), ours
