"""boxmed_eval.tables: published numbers (against the paper's text), leaderboard reproduction,
golden renderings (Markdown / LaTeX / CSV), ablation specs, Table 3, LaTeX compilation.

Regenerate the golden files after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_tables.py``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES
from boxmed_eval.rundata import load_run
from boxmed_eval.stats import compare_runs
from boxmed_eval.tables import (
    AblationSpec,
    Cell,
    Table,
    ablation_table,
    comparison_table,
    latex_document,
    leaderboard_table,
    load_published,
    per_class_table,
    published_dir,
)
from tests.rundir_fixtures import write_run

GOLDEN = Path(__file__).parent / "golden"
PAPER = Path(__file__).resolve().parents[2] / "shared" / "reference" / "boxmed-rl-paper.txt"
PUBLISHED = published_dir()
SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden file {path} missing (run with UPDATE_GOLDEN=1 once)"
    assert text == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- fixed runs

IDS = [f"st{i:02d}" for i in range(16)]
FULL = [0.41, 0.35, 0.52, 0.28, 0.44, 0.39, 0.61, 0.33, 0.47, 0.30, 0.55, 0.42, 0.36, 0.48, 0.27, 0.58]
# Lower than FULL on 15 of 16 studies -> one-tailed p well below 0.01.
LOWER = [0.30, 0.31, 0.45, 0.20, 0.40, 0.29, 0.50, 0.34, 0.38, 0.22, 0.49, 0.35, 0.24, 0.41, 0.26, 0.45]
# Mixed differences -> not significant.
MIXED = [0.43, 0.33, 0.55, 0.25, 0.46, 0.36, 0.60, 0.35, 0.45, 0.31, 0.52, 0.44, 0.38, 0.47, 0.25, 0.59]


def fixed_run(path: Path, values: list[float], *, name: str, dataset: str = "mimic") -> Path:
    scores = pd.DataFrame({"id": IDS, "bleu_4": values, "rouge_l": [v * 0.9 for v in values],
                           "chexpert_example_f1": [min(1.0, v + 0.1) for v in values]})
    summary = {"bleu_1": sum(values) / 16 + 0.3, "bleu_4": sum(values) / 16 * 0.3,
               "rouge_l": sum(scores["rouge_l"]) / 16, "chexpert_f1": sum(scores["chexpert_example_f1"]) / 16,
               "meteor": 0.15, "n_studies": 16, "conventions": {"chexpert_convention": "R2Gen micro"}}
    per_class = pd.DataFrame({"category": list(CHEXPERT_CLASSES),
                              "accuracy": [0.9 - 0.01 * i for i in range(14)],
                              "precision": [0.5 + 0.01 * i for i in range(14)],
                              "recall": [0.4 + 0.02 * i for i in range(14)],
                              "f1": [0.45 + 0.015 * i for i in range(14)],
                              "support": list(range(10, 24))})
    return write_run(path, scores=scores, summary=summary, per_class=per_class,
                     info={"name": name, "model": "fixture", "dataset": dataset, "split": "test"})


@pytest.fixture()
def runs(tmp_path: Path) -> dict[str, Path]:
    return {"full": fixed_run(tmp_path / "full", FULL, name="full-model"),
            "lower": fixed_run(tmp_path / "lower", LOWER, name="ablated-a"),
            "mixed": fixed_run(tmp_path / "mixed", MIXED, name="ablated-b")}


# ---------------------------------------------------------------------------- published data


def _paper_lines() -> list[str]:
    if not PAPER.exists():
        pytest.skip("the paper's text is not available")
    return PAPER.read_text(encoding="utf-8").splitlines()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("\t")]


def _missing(text: str) -> str:
    return "" if text in {"-", "_", "\u2014"} else text


@pytest.mark.parametrize("file,title", [("mimic_cxr_table1.csv", "Table 1."), ("iu_xray_table2.csv", "Table 2.")])
def test_published_comparison_tables_match_the_paper(file: str, title: str) -> None:
    lines = _paper_lines()
    end = next(i for i, line in enumerate(lines) if line.startswith(title))
    start = max(i for i, line in enumerate(lines[:end]) if line.startswith("Method\tYear"))
    block = lines[start:end]
    with (PUBLISHED / file).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    metrics = [c for c in rows[0] if c not in {"method", "year", "group", "reproduced"}]
    for row in rows:
        prefix = "Our BoxMed-RL" if row["method"] == "BoxMed-RL" else row["method"] + " ("
        matches = [line for line in block if line.startswith(prefix)]
        assert len(matches) == 1, (row["method"], matches)
        cells = _cells(matches[0])
        assert cells[1] == row["year"]
        if "reproduced" in row:
            assert (row["reproduced"] == "yes") == ("[\u2020]" in cells[0])
        assert [_missing(c) for c in cells[2:]] == [row[m] for m in metrics], row["method"]


def test_published_tables_3_to_5_match_the_paper() -> None:
    lines = _paper_lines()
    text = "\n".join(lines)
    with (PUBLISHED / "mimic_cxr_table3_per_class.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = "Cardiomediastinum" if row["category"] == "Enlarged Cardiomediastinum" else row["category"]
            expected = "\t".join([name, row["accuracy"], row["precision"], row["recall"], row["f1"]])
            assert expected in lines, row["category"]
    with (PUBLISHED / "mimic_cxr_table4_ablation.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            line = next(l for l in lines if l.startswith(row["configuration"] + "\t"))
            numbers = [c.replace("**", "") for c in _cells(line)[4:]]
            metrics = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "gema_score", "chexpert_f1", "green"]
            assert numbers == [row[m] for m in metrics]
            assert all(c.endswith("**") for c in _cells(line)[4:]) == (row["stars_vs_full"] == "**")
    table5_lines = [l for l in lines if re.match(r"^(\\checkmark|×|X)\t", l)]
    with (PUBLISHED / "mimic_cxr_table5_strategies.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(table5_lines) == len(rows)
    metrics = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "chexpert_f1"]
    for line, row in zip(table5_lines, rows):
        cells = _cells(line)
        ticks = ["yes" if c == "\\checkmark" else "no" for c in cells[:3]]
        assert ticks == [row["vision_tower_trained"], row["projector_trained"], row["adapter"]]
        assert [c.replace("**", "") for c in cells[3:]] == [row[m] for m in metrics]
    assert "0.456" in text  # Table 3's max F1 quoted in the text


# ---------------------------------------------------------------------------- leaderboard


def _markdown_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| :--"):
            rows.append([c.strip() for c in line.strip()[2:-2].split(" | ")])
    return rows


@pytest.mark.parametrize("dataset,file", [("mimic", "mimic_cxr_table1.csv"), ("iu_xray", "iu_xray_table2.csv")])
def test_leaderboard_reproduces_every_published_number(dataset: str, file: str) -> None:
    table = leaderboard_table(dataset)
    rendered = _markdown_rows(table.render("markdown"))
    by_method = {row[0].replace(" †", "").replace("\\", ""): row for row in rendered}
    csv_rows = {row["method"]: row for row in csv.DictReader(io.StringIO(table.render("csv")))}
    with (PUBLISHED / file).open(encoding="utf-8") as handle:
        published = list(csv.DictReader(handle))
    metrics = [c for c in published[0] if c not in {"method", "year", "group", "reproduced"}]
    for row in published:
        shown = by_method[row["method"]]
        assert shown[1] == row["year"]
        for metric, cell in zip(metrics, shown[2:]):
            assert cell.replace("**", "") == (row[metric] or "-"), (row["method"], metric)
            assert csv_rows[row["method"]][metric] == row[metric]
        assert csv_rows[row["method"]]["group"] == row["group"]
    latex = table.render("latex")
    for row in published:
        for metric in metrics:
            if row[metric]:
                assert row[metric] in latex


def test_leaderboard_groups_best_and_local_runs(runs: dict[str, Path]) -> None:
    table = leaderboard_table("mimic", [load_run(runs["full"])])
    groups = [group for group, _ in table.groups]
    assert groups == ["Traditional Encoder-Decoder", "Region-Enhanced Encoder-Decoder",
                      "Prompts-Driven Large Language Models", "BoxMed-RL", "Local runs"]
    markdown = table.render("markdown")
    # Best published values of Table 1 (bold in the paper): BoxMed-RL's BLEU-2/3, METEOR, ROUGE-L, GREEN...
    boxmed = next(r for r in _markdown_rows(markdown) if r[0] == "BoxMed-RL")
    assert boxmed[3] == "**0.271**" and boxmed[8] == "**0.560**"
    local = next(r for r in _markdown_rows(markdown) if r[0] == "full-model")
    assert local[1] == "-" and local[8] == "-" and local[10] == "-"  # no year, GEMA-Score, GREEN
    assert "**" in local[2]  # 0.742 beats every published BLEU-1


def test_best_marking_bolds_ties_on_displayed_values() -> None:
    table = Table(["m", "x"], [(None, [[Cell("a"), Cell("0.500")], [Cell("b"), Cell("0.500")], [Cell("c"), Cell("-")]])])
    table.mark_best([1])
    assert [row[1].bold for row in table.rows()] == [True, True, False]


def test_leaderboard_golden(runs: dict[str, Path]) -> None:
    table = leaderboard_table("iu_xray", [load_run(runs["full"]), load_run(runs["mixed"])])
    check_golden("leaderboard_iu_xray.md", table.render("markdown"))
    check_golden("leaderboard_iu_xray.tex", table.render("latex"))
    check_golden("leaderboard_iu_xray.csv", table.render("csv"))


def test_leaderboard_of_a_dataset_without_published_table(runs: dict[str, Path]) -> None:
    table = leaderboard_table("demo", [load_run(runs["full"]), load_run(runs["lower"])])
    assert table.groups[0][0] is None and len(table.rows()) == 2
    assert table.headers[2:] == ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CheXpert"]


# ---------------------------------------------------------------------------- compare / Table 3


def test_comparison_golden(runs: dict[str, Path]) -> None:
    comparison = compare_runs(load_run(runs["full"]), [load_run(runs["lower"]), load_run(runs["mixed"])])
    table = comparison_table(comparison)
    markdown = table.render("markdown")
    rows = {r[0]: r for r in _markdown_rows(markdown)}
    assert rows["BLEU-4"][2].endswith("\\*\\*")  # LOWER: significant at 0.01
    assert not rows["BLEU-4"][5].endswith("*")  # MIXED: not significant
    check_golden("compare.md", markdown)
    check_golden("compare.tex", table.render("latex"))
    check_golden("compare.csv", table.render("csv"))


def test_table3_golden(runs: dict[str, Path]) -> None:
    table = per_class_table(load_run(runs["full"]))
    assert [row[0].text for row in table.rows()][:2] == ["No Finding", "Enlarged Cardiomediastinum"]
    check_golden("table3.md", table.render("markdown"))
    check_golden("table3.csv", table.render("csv"))


# ---------------------------------------------------------------------------- ablations


def test_shipped_specs_parse_and_match_the_paper_layout() -> None:
    table4 = AblationSpec.from_toml(SPECS / "table4.toml")
    assert [row.label for row in table4.rows] == ["w/o MCL & SVR", "w/o SVR", "w/o MCL", "BoxMed-RL"]
    assert table4.full_row.label == "BoxMed-RL" and list(table4.ticks.values()) == ["MCL", "SVR", "Adapter"]
    table5 = AblationSpec.from_toml(SPECS / "table5.toml")
    assert list(table5.ticks.values()) == ["Vision Tower", "Projector", "Adapter"]
    assert table5.full_row is table5.rows[-1] and not table5.show_label
    with (PUBLISHED / "mimic_cxr_table4_ablation.csv").open(encoding="utf-8") as handle:
        published = list(csv.DictReader(handle))
    metrics = [m for m in published[0] if m not in {"configuration", "mcl", "svr", "adapter", "stars_vs_full"}]
    assert table4.metrics == metrics
    for row, spec_row in zip(published, table4.rows):
        assert row["configuration"] == spec_row.label
        assert [row[k] == "yes" for k in ("mcl", "svr", "adapter")] == [spec_row.ticks[k] for k in ("mcl", "svr", "adapter")]


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(body, encoding="utf-8")
    return path


SPEC_OK = """
title = "Ablation"
metrics = ["bleu_4", "rouge_l", "chexpert_f1"]
[ticks]
mcl = "MCL"
[[row]]
label = "w/o MCL (a)"
run = "lower"
ticks = { mcl = false }
[[row]]
label = "w/o MCL (b)"
run = "mixed"
ticks = { mcl = false }
[[row]]
label = "Full"
run = "full"
full = true
ticks = { mcl = true }
"""


def test_ablation_golden(tmp_path: Path, runs: dict[str, Path]) -> None:
    table = ablation_table(AblationSpec.from_toml(_spec(tmp_path, SPEC_OK)))
    rows = _markdown_rows(table.render("markdown"))
    assert rows[1][:2] == ["w/o MCL (a)", "✗"] and rows[1][2].endswith("\\*\\*")
    assert not rows[2][2].endswith("*") and not rows[3][2].endswith("*")
    text = table.render("markdown").replace(str(tmp_path), "TMP")
    check_golden("ablation.md", text)
    check_golden("ablation.tex", table.render("latex").replace(str(tmp_path), "TMP"))
    check_golden("ablation.csv", table.render("csv"))


@pytest.mark.parametrize("body,message", [
    (SPEC_OK.replace("full = true\n", ""), "exactly one row must have full = true"),
    (SPEC_OK.replace("ticks = { mcl = false }", "ticks = { mcl = false, svr = true }", 1), "unknown: \\['svr'\\]"),
    (SPEC_OK.replace('run = "mixed"', 'run = "nowhere"'), "1 run directories of the spec do not exist"),
    (SPEC_OK.replace('metrics = ["bleu_4", "rouge_l", "chexpert_f1"]', "metrics = []"), "'metrics' must be"),
    ("alternative = 'lower'\n" + SPEC_OK, "unknown alternative 'lower'"),
    (SPEC_OK + "alternative = 'less'\n", "unknown keys in \\[\\[row\\]\\]: alternative"),
    ("metric = ['bleu_4']\n" + SPEC_OK, "unknown top-level keys: metric"),
    ("metrics = [", "malformed TOML"),
])
def test_ablation_spec_errors(tmp_path: Path, runs: dict[str, Path], body: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ablation_table(AblationSpec.from_toml(_spec(tmp_path, body)))


def test_unknown_dataset_alias_and_missing_published_dir(tmp_path: Path) -> None:
    assert load_published("demo") is None
    with pytest.raises(DataError, match="published results file not found"):
        load_published("mimic", tmp_path)


# ---------------------------------------------------------------------------- LaTeX


def test_latex_tables_compile(tmp_path: Path, runs: dict[str, Path]) -> None:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    body = "\n".join([
        leaderboard_table("mimic", [load_run(runs["full"])]).render("latex"),
        leaderboard_table("iu_xray").render("latex"),
        ablation_table(AblationSpec.from_toml(_spec(tmp_path, SPEC_OK))).render("latex"),
        comparison_table(compare_runs(load_run(runs["full"]), [load_run(runs["lower"])])).render("latex"),
        per_class_table(load_run(runs["full"])).render("latex"),
    ])
    (tmp_path / "tables.tex").write_text(latex_document(body), encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


# ---------------------------------------------------------------------------- ReXrank leaderboard

REXRANK = Path(__file__).resolve().parents[2] / "shared" / "data" / "generated_reports" / "rexrank_leaderboard"
REXRANK_COLUMNS = {"BLEU": "radcliq_bleu_2", "BertScore": "bertscore_cxr", "SembScore": "sembscore",
                   "RadGraph": "radgraph_combined", "RadCliQ-v0": "radcliq_v0", "RadCliQ-v1": "radcliq_v1",
                   "1/RadCliQ-v1": "radcliq_v1_inverse", "RaTEScore": "ratescore", "GREEN": "green",
                   "CRIMSON": "crimson"}


@pytest.mark.parametrize("source,original", [("rexrank", "findings_result_iu_xray_at_1602a4c.csv"),
                                             ("rexrank-8152f99", "result_iu_xray_at_8152f99.csv")])
def test_rexrank_rows_are_the_published_leaderboard(source: str, original: str) -> None:
    """Every packaged ReXrank number equals the leaderboard file it was taken from, and the
    table shows each as published."""
    if not (REXRANK / original).exists():
        pytest.skip("the ReXrank leaderboard files are not in ../shared/data")
    with (REXRANK / original).open(encoding="utf-8") as handle:
        published = list(csv.DictReader(handle))
    table = leaderboard_table("iu_xray", source=source)
    shown = {row["method"]: row for row in csv.DictReader(io.StringIO(table.render("csv")))}
    assert len(shown) == len(published)
    columns = [c for c in published[0] if c in REXRANK_COLUMNS]
    assert len(columns) >= 6
    for row in published:
        method = row['Model Name'].strip()
        assert shown[method]["year"] == row["Date"].strip()
        for column in columns:
            assert float(shown[method][REXRANK_COLUMNS[column]]) == float(row[column]), (method, column)


def test_rexrank_beside_local_runs_marks_the_best_and_lowest_radcliq(tmp_path: Path) -> None:
    scores = pd.DataFrame({"id": IDS, "bertscore_cxr": [0.9] * 16})
    local = write_run(tmp_path / "mine", scores=scores,
                      summary={"bertscore_cxr": 0.9, "radcliq_v0": 1.5, "radcliq_v1": 0.2, "sembscore": 0.1},
                      info={"name": "mine", "model": "fixture", "dataset": "iu_xray", "split": "test"})
    table = leaderboard_table("iu_xray", [load_run(local)], source="rexrank-8152f99")
    rows = {r[0].replace("\\", ""): r for r in _markdown_rows(table.render("markdown"))}
    assert table.headers[2:] == ["BLEU", "BertScore", "SembScore", "RadGraph", "RadCliQ-v0", "RadCliQ-v1"]
    mine = rows["mine"]
    assert mine[3] == "**0.900**" and mine[6] == "**1.500**" and mine[7] == "**0.200**"  # RadCliQ: lowest is best
    assert mine[2] == "-" and not mine[4].startswith("**")  # not computed; below the published SembScores
    assert rows["Cvt2distilgpt2 (CSIRO)"][4] == "**0.605**"  # the board's best SembScore, above the local 0.1
    with pytest.raises(DataError, match="IU X-Ray only"):
        leaderboard_table("mimic", source="rexrank")
