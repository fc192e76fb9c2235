"""BoxMed-RL data wiring and refusals (`train boxmedrl`), the plugin's manifest check, and
`reproduce table4` end to end on demo with the tiny preset (a few steps per stage)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("trl")
pytest.importorskip("peft")

from boxmed_eval.cli import main  # noqa: E402
from boxmed_eval.errors import BoxmedError  # noqa: E402
from boxmed_model.plugin import BoxMedRL, parse_wiring  # noqa: E402

QUICK = """
save_steps = 1000
[mcl]
max_steps = 1
[svr]
max_steps = 1
num_generations = 2
max_completion_length = 8
gradient_accumulation_steps = 1
[adapter]
max_steps = 1
"""


# Table 4 needs rows that differ: 40 MCL steps at a tiny-sized lr teach the tiny base report
# words (greedy: "Finding: ... lung"), while the rows without MCL keep the random base's empty
# answers after one adapter step, so "w/o MCL" rows score below the full model on every study.
TABLE4 = QUICK.replace("[mcl]\nmax_steps = 1", "[mcl]\nmax_steps = 40\nlearning_rate = 1e-2\nwarmup_steps = 2\n"
                                            "per_device_batch_size = 5")


@pytest.fixture()
def quick_toml(tmp_path: Path) -> Path:
    path = tmp_path / "quick.toml"
    path.write_text(QUICK)
    return path


def test_wiring_parses_per_dataset_roots_and_options() -> None:
    wiring = parse_wiring(("ms_cxr", "latte_cxr"), "mimic", ("/data/mimic", "latte_cxr=/data/latte"),
                          ("ms_cxr.reports=auto", "latte_cxr.min_certainty=3"))
    assert wiring.root("ms_cxr") == "/data/mimic" and wiring.root("latte_cxr") == "/data/latte"
    assert wiring.options == {"ms_cxr": {"reports": "auto"}, "latte_cxr": {"min_certainty": 3}}
    with pytest.raises(BoxmedError, match="NAME.KEY=VALUE"):
        parse_wiring(("demo",), None, (), ("reports=auto",))
    with pytest.raises(BoxmedError, match="more than once"):
        parse_wiring(("demo", "demo"), None, (), ())
    with pytest.raises(BoxmedError, match="not used here"):
        parse_wiring(("demo",), None, (), ("iu_xray.annotation=x.json",))


def test_pretraining_set_without_boxes_is_refused_before_training(tmp_path: Path, quick_toml: Path) -> None:
    from tests.conftest import write_iu_dataset

    iu = write_iu_dataset(tmp_path / "iu")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "boxmedrl", "--base", "tiny", "--pretrain-dataset", "iu_xray",
                                       "--data-root", f"iu_xray={iu}", "--dataset", "demo", "--config",
                                       str(quick_toml), "--out", str(out)])
    assert result.exit_code == 2 and "pretraining dataset 'iu_xray' has no finding boxes" in result.output
    assert "Nothing was trained" in result.output
    assert not (out / "tiny_base").exists() and not (out / "mcl").exists()  # refused before the base was built
    # a report-only --dataset with no --pretrain-dataset: the same refusal, naming the fix
    result = CliRunner().invoke(main, ["train", "boxmedrl", "--base", "tiny", "--dataset", "iu_xray",
                                       "--data-root", str(iu), "--out", str(out)])
    assert result.exit_code == 2 and "--pretrain-dataset ms_cxr --pretrain-dataset latte_cxr" in result.output
    # the old flag fails with the new spelling
    result = CliRunner().invoke(main, ["train", "boxmedrl", "--base", "tiny", "--dataset", "demo",
                                       "--svr-dataset", "ms_cxr", "--svr-data-root", "/x", "--out", str(out)])
    assert result.exit_code != 0 and "--pretrain-dataset ms_cxr --data-root ms_cxr=/x" in result.output


def test_pretraining_feeds_mcl_and_svr_and_reuse_with_another_ablation_is_refused(tmp_path: Path,
                                                                                   quick_toml: Path) -> None:
    from tests.conftest import write_iu_dataset

    iu = write_iu_dataset(tmp_path / "iu")
    out = tmp_path / "out"
    args = ["train", "boxmedrl", "--base", "tiny", "--pretrain-dataset", "demo", "--dataset", "iu_xray",
            "--data-root", f"iu_xray={iu}", "--limit", "4", "--config", str(quick_toml), "--output", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "boxmedrl.json").read_text())
    assert manifest["ablation"] == "full" and manifest["strategy"] == "adapter"
    assert manifest["stages"]["mcl"]["data"] == [{"name": "demo"}] == manifest["stages"]["svr"]["data"]
    assert manifest["stages"]["adapter"]["data"] == {"name": "iu_xray"}
    assert manifest["stages"]["adapter"]["lineage"] == ["mcl", "svr", "adapter"]
    before = (out / "adapter" / "final" / "adapter_model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(main, [*args, "--ablation", "wo_svr"])
    assert result.exit_code == 2 and "stage adapter exists" in result.output and "ablation full" in result.output
    assert (out / "adapter" / "final" / "adapter_model.safetensors").stat().st_mtime_ns == before
    # the plugin refuses these weights for another row or strategy, and accepts the right one
    with pytest.raises(BoxmedError, match="trained with ablation 'full', not 'wo_svr'"):
        BoxMedRL(weights=str(out), ablation="wo_svr")
    with pytest.raises(BoxmedError, match="strategy 'adapter', not 'projector'"):
        BoxMedRL(weights=str(out), strategy="projector")
    BoxMedRL(weights=str(out), ablation="full", strategy="adapter")


def _stars(p_value: float) -> str:
    return "" if p_value != p_value else "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""  # nan: no test


def test_reproduce_table4_on_demo(tmp_path: Path) -> None:
    import csv as csv_module
    import shutil

    import numpy as np
    from scipy.stats import wilcoxon

    from boxmed_eval.rundata import load_run

    config = tmp_path / "table4.toml"
    config.write_text(TABLE4)
    out = tmp_path / "table4"
    args = ["reproduce", "table4", "--base", "tiny", "--pretrain-dataset", "demo", "--dataset", "demo",
            "--train-limit", "4", "--limit", "6", "--config", str(config), "--metrics", "nlg",
            "--model-arg", "max_new_tokens=32"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for row, chain in (("full", ["mcl", "svr", "adapter"]), ("wo_svr", ["mcl", "adapter"]),
                       ("wo_mcl", ["svr", "adapter"]), ("wo_mcl_svr", ["adapter"])):
        manifest = json.loads((out / "train" / row / "boxmedrl.json").read_text())
        assert manifest["stages"]["adapter"]["lineage"] == chain and manifest["ablation"] == row
        assert manifest["base"] == "../tiny_base"  # inside --out: stored relative (the directory can move)
        assert json.loads((out / "runs" / row / "run.json").read_text())["n_studies"] == 6
    shared = json.loads((out / "train" / "wo_svr" / "boxmedrl.json").read_text())["stages"]["mcl"]
    assert shared["shared_from"] == shared["path"] == "../full/mcl/final"
    assert not (out / "train" / "wo_svr" / "mcl").exists()  # shared, not retrained
    markdown = (out / "table4.md").read_text()
    for label in ("w/o MCL & SVR", "w/o SVR", "w/o MCL", "BoxMed-RL"):
        assert f"| {label} |" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    assert all(h in header for h in ("MCL", "SVR", "Adapter", "BLEU-1"))
    assert "Wilcoxon" in markdown and "* p < 0.05" in markdown
    with (out / "table4.csv").open(newline="") as handle:
        table = list(csv_module.DictReader(handle))
    assert [r["configuration"] for r in table] == ["w/o MCL & SVR", "w/o SVR", "w/o MCL", "BoxMed-RL"]
    assert table[0]["mcl"] == "no" and table[0]["adapter"] == "yes"  # the tick columns
    assert "\\begin{tabular}" in (out / "table4.tex").read_text()

    # every star is scipy's one-tailed Wilcoxon (is the row lower than the full model?) on the
    # per-study scores, and at least one row is starred: the rows really differ
    metrics = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l"]
    scores = {row: load_run(out / "runs" / row, require_scores=True).require_scores()
              for row in ("full", "wo_mcl_svr", "wo_svr", "wo_mcl")}
    starred = []
    for label, row in (("w/o MCL & SVR", "wo_mcl_svr"), ("w/o SVR", "wo_svr"), ("w/o MCL", "wo_mcl")):
        line = next(r for r in table if r["configuration"] == label)
        for metric in metrics:
            full = scores["full"][metric].to_numpy(float)
            other = scores[row].loc[scores["full"].index, metric].to_numpy(float)
            p = float("nan") if np.all(other == full) else wilcoxon(other, full, alternative="less").pvalue
            assert line[f"{metric}_stars"] == _stars(p), (label, metric, p)
            if line[f"{metric}_stars"]:
                starred.append((label, metric))
    assert ("w/o MCL & SVR", "bleu_1") in starred, starred
    assert re.search(r"\| w/o MCL & SVR \|.*\d\\\*", markdown)  # the star is in the rendered tables too
    assert re.search(r"\d\$\^\{\*\}\$", (out / "table4.tex").read_text())

    # resumable, also after the whole directory moved: nothing is trained or generated again
    moved = tmp_path / "elsewhere" / "table4"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    adapter = moved / "train" / "full" / "adapter" / "final" / "adapter_model.safetensors"
    before = adapter.stat().st_mtime_ns
    again = CliRunner().invoke(main, [*args, "--out", str(moved)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "built the tiny base" not in again.output and adapter.stat().st_mtime_ns == before
    for row in ("full", "wo_svr", "wo_mcl", "wo_mcl_svr"):
        record = json.loads((moved / "runs" / row / "run.json").read_text())
        assert record["generated_this_session"] == 0 and record["model_args"]["weights"] == str(moved / "train" / row)
    assert (moved / "table4.md").read_text() == markdown


def test_max_new_tokens_defaults_from_the_dataset() -> None:
    from boxmed_eval.datasets.base import DATASETS
    from boxmed_model.plugin import DEFAULT_MAX_NEW_TOKENS, default_max_new_tokens

    assert default_max_new_tokens(DATASETS.get("mimic")) == 2 * 200 + 16  # long MIMIC findings fit
    assert default_max_new_tokens(DATASETS.get("iu_xray")) == 2 * 80 + 16
    assert default_max_new_tokens(None) == DEFAULT_MAX_NEW_TOKENS == 512
    assert BoxMedRL(weights="tiny").max_new_tokens is None  # decided in setup() from the run's dataset
