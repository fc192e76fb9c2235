"""BoxMed-RL data wiring and refusals (`train boxmedrl`), the plugin's manifest check, and
`reproduce table4` end to end on demo with the tiny preset (a few steps per stage)."""

from __future__ import annotations

import json
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


def test_reproduce_table4_on_demo(tmp_path: Path, quick_toml: Path) -> None:
    out = tmp_path / "table4"
    args = ["reproduce", "table4", "--base", "tiny", "--pretrain-dataset", "demo", "--dataset", "demo",
            "--train-limit", "4", "--limit", "6", "--config", str(quick_toml), "--metrics", "nlg",
            "--model-arg", "max_new_tokens=8", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for row, chain in (("full", ["mcl", "svr", "adapter"]), ("wo_svr", ["mcl", "adapter"]),
                       ("wo_mcl", ["svr", "adapter"]), ("wo_mcl_svr", ["adapter"])):
        manifest = json.loads((out / "train" / row / "boxmedrl.json").read_text())
        assert manifest["stages"]["adapter"]["lineage"] == chain and manifest["ablation"] == row
        assert json.loads((out / "runs" / row / "run.json").read_text())["n_studies"] == 6
    shared = json.loads((out / "train" / "wo_svr" / "boxmedrl.json").read_text())["stages"]["mcl"]
    assert shared["shared_from"] == str((out / "train" / "full" / "mcl" / "final").resolve())
    assert not (out / "train" / "wo_svr" / "mcl").exists()  # shared, not retrained
    markdown = (out / "table4.md").read_text()
    for label in ("w/o MCL & SVR", "w/o SVR", "w/o MCL", "BoxMed-RL"):
        assert f"| {label} |" in markdown
    header = markdown.splitlines()[0] if markdown.startswith("|") else next(
        line for line in markdown.splitlines() if line.startswith("|"))
    assert all(h in header for h in ("MCL", "SVR", "Adapter", "BLEU-1"))
    assert "Wilcoxon" in markdown and "* p < 0.05" in markdown
    csv = (out / "table4.csv").read_text().splitlines()
    assert csv[0].startswith("configuration,mcl,svr,adapter,bleu_1") and "bleu_1_stars" in csv[0] and len(csv) >= 5
    assert csv[1].startswith("w/o MCL & SVR,no,no,yes,")  # the tick columns
    assert "\\begin{tabular}" in (out / "table4.tex").read_text()
    # resumable: a rerun trains nothing and generates nothing new
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and "built the tiny base" not in again.output


def test_max_new_tokens_defaults_from_the_dataset() -> None:
    from boxmed_eval.datasets.base import DATASETS
    from boxmed_model.plugin import DEFAULT_MAX_NEW_TOKENS, default_max_new_tokens

    assert default_max_new_tokens(DATASETS.get("mimic")) == 2 * 200 + 16  # long MIMIC findings fit
    assert default_max_new_tokens(DATASETS.get("iu_xray")) == 2 * 80 + 16
    assert default_max_new_tokens(None) == DEFAULT_MAX_NEW_TOKENS == 512
    assert BoxMedRL(weights="tiny").max_new_tokens is None  # decided in setup() from the run's dataset
