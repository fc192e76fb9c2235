"""`boxmed-eval report`: the HTML builder, without a browser (tests/test_report_browser.py opens
the page in headless Chromium)."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats as scipy_stats

from boxmed_eval.cli import main
from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES
from boxmed_eval.report import (build_report, ci_statistic, match_sentences, read_labels, split_sentences)
from boxmed_eval.rundata import load_run
from boxmed_eval.stats import compare_runs
from tests.rundir_fixtures import synthetic_run

FINDINGS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion.",
    "Small right pleural effusion. Heart size is normal. No pneumothorax.",
    "Moderate cardiomegaly. Mild pulmonary edema.",
]


class _Page(HTMLParser):
    """The parts of the page the tests read: metric cells, sections, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.scripts: dict[str, str] = {}
        self._script: str | None = None
        self._td: dict[str, str] | None = None
        self.ci_cells: list[str] = []
        self._ci = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "script":
            self._script = attributes.get("id", f"inline{len(self.scripts)}")
            self.scripts[self._script] = ""
        if tag == "td" and "value" in attributes.get("class", "").split():
            self._td = {**attributes, "text": ""}
        if tag == "td" and attributes.get("class") == "ci":
            self._ci = True
            self.ci_cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None
        if tag == "td" and self._td is not None:
            self.values.append(self._td)
            self._td = None
        if tag == "td":
            self._ci = False

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts[self._script] += data
        if self._td is not None:
            self._td["text"] += data
        if self._ci:
            self.ci_cells[-1] += data


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def case_data(page: _Page) -> dict:
    return json.loads(page.scripts["case-data"])


def _image(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8)).save(path)


def full_run(path: Path, *, quality: float = 0.5, seed: int = 0, n: int = 12) -> Path:
    """A synthetic run with everything the report can show: images (relative to data_root),
    reference and predicted boxes (the predicted ones recorded on a half-size image), reasoning,
    CheXpert labels of both sides, GREEN replies."""
    synthetic_run(path, quality=quality, seed=seed, n=n)
    ids = [f"s{i:03d}" for i in range(n)]
    root = path.parent / "images_root"
    references, predictions, labels, replies = [], [], [], []
    for k, study_id in enumerate(ids):
        _image(root / study_id / "0.png", (200, 160), k)
        gt = [{"x1": 10, "y1": 20, "x2": 60, "y2": 80, "category": "Edema"}] * (k % 3)
        references.append({"id": study_id, "image_paths": [f"{study_id}/0.png"], "findings": FINDINGS[k % 3],
                           "boxes": gt})
        pred_boxes = [{"x1": 5, "y1": 10, "x2": 30, "y2": 40, "category": "Cardiomegaly", "image_width": 100,
                       "image_height": 80}] * (k % 2)
        predictions.append({"id": study_id, "report": FINDINGS[(k + 1) % 3],
                            "reasoning": "<think>Look at the heart.</think><answer>done</answer>" if k % 2 else None,
                            "boxes": pred_boxes})
        for side, shift in (("reference", 0), ("prediction", 1)):
            row = {"id": study_id, "side": side}
            for c, name in enumerate(CHEXPERT_CLASSES):
                row[name] = ["1", "0", "", "-1"][(c + k + shift) % 4]
            labels.append(row)
        replies.append({"id": study_id, "green": 0.5, "green_lenient": 0.5, "parse_problem": "",
                        "reply": f"[Explanation]:\nStudy {study_id} explained.\n[Clinically Significant Errors]:\n"
                                 "(a) False report of a finding in the candidate: 1."})
    (path / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in references))
    (path / "predictions.jsonl").write_text("".join(json.dumps({k: v for k, v in p.items() if v is not None}) + "\n"
                                                    for p in predictions))
    pd.DataFrame(labels).to_csv(path / "chexpert_labels.csv", index=False)
    pd.DataFrame(replies).to_csv(path / "green_replies.csv", index=False)
    pd.DataFrame({"id": ids, "gema_score": 0.4, "parse_problem": "",
                  "reply": [f'output: {{"weighted_final_score": 0.4, "study": "{i}"}}' for i in ids]}
                 ).to_csv(path / "gema_replies.csv", index=False)
    scores = pd.read_csv(path / "scores.csv", dtype={"id": str})
    scores["gema_score"] = np.linspace(0.2, 0.6, n)
    scores.to_csv(path / "scores.csv", index=False)
    summary = json.loads((path / "summary.json").read_text())
    summary["gema_score"] = float(scores["gema_score"].mean())
    (path / "summary.json").write_text(json.dumps(summary))
    info = json.loads((path / "run.json").read_text())
    info.update(data_root=str(root), versions={"boxmed-eval": "0.1.0"}, git_revision="abc123")
    (path / "run.json").write_text(json.dumps(info))
    return path


def test_sentences_are_split_and_matched():
    assert split_sentences("A b. C d!\nE f") == ["A b.", "C d!", "E f"]
    match = match_sentences("The lungs are clear. Heart size is normal. No effusion.",
                            "heart size is normal. The lungs are clear bilaterally. Cardiomegaly.")
    # exact (case and punctuation aside), close (Jaccard 4/5), none
    assert match.reference_level == [1, 2, 0]
    assert match.generated_level == [2, 1, 0]
    assert match.reference_partner == [1, 0, -1] and match.generated_partner == [1, 0, -1]
    empty = match_sentences("", "Something.")
    assert empty.reference == [] and empty.generated_level == [0]


def test_full_run_page_holds_every_section(tmp_path):
    run = full_run(tmp_path / "run")
    result = build_report([run], tmp_path / "report.html", n_resamples=200)
    page = parse(result.path)
    assert {"provenance", "metrics", "per-class-section", "per-class-chart", "cases-section", "case-data"} <= page.ids
    assert "comparison-section" not in page.ids  # one run: no comparison
    summary = json.loads((run / "summary.json").read_text())
    shown = {cell["data-metric"]: cell for cell in page.values}
    metrics = {k for k, v in summary.items() if isinstance(v, float) and not k.endswith("_seconds")}
    assert metrics <= set(shown)
    for metric in metrics:
        assert float(shown[metric]["data-value"]) == summary[metric]
        assert shown[metric]["text"] == f"{summary[metric]:.4f}"
    data = case_data(page)
    assert [c["id"] for c in data["cases"]] == [f"s{i:03d}" for i in range(12)]
    assert data["has"] == {"images": True, "boxes": True, "labels": True, "reasoning": True,
                           "judges": ["gema", "green"]}
    references = [json.loads(line) for line in (run / "references.jsonl").read_text().splitlines()]
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    labels = pd.read_csv(run / "chexpert_labels.csv", dtype=str, keep_default_na=False)
    for case, reference, prediction in zip(data["cases"], references, predictions):
        entry = case["runs"][0]
        assert len(case.get("gt", [])) == len(reference["boxes"])
        assert len(entry.get("boxes", [])) == len(prediction.get("boxes", []))
        assert " ".join(case["ref"]) == reference["findings"]
        assert " ".join(g[0] for g in entry["gen"]) == prediction["report"]
        image = case["images"][0]
        assert (image["w"], image["h"]) == (200, 160) and image["src"].startswith("data:image/jpeg;base64,")
        if prediction.get("boxes"):
            # recorded on a 100x80 image: scaled by 2 onto the 200x160 original
            assert entry["boxes"][0][:4] == [10, 20, 60, 80]
        if prediction.get("reasoning"):
            assert entry["reasoning"] == "Look at the heart.done"
        # GREEN: the explanation (after "[Explanation]:"); GEMA: the reply as written
        assert entry["judges"]["green"]["reply"].startswith("Study " + case["id"] + " explained.")
        assert f'"study": "{case["id"]}"' in entry["judges"]["gema"]["reply"]
        for side, key in (("reference", "lr"), ("prediction", "lg")):
            row = labels[(labels["id"] == case["id"]) & (labels["side"] == side)].iloc[0]
            expected = "".join({"1": "1", "0": "0", "-1": "u", "": "."}[row[c]] for c in CHEXPERT_CLASSES)
            assert entry[key] == expected
        scores = pd.read_csv(run / "scores.csv", dtype={"id": str}).set_index("id")
        columns = data["runs"][0]["columns"]
        assert sorted(columns) == sorted(scores.columns) and columns[:2] == ["bleu_1", "bleu_4"]
        assert entry["s"] == pytest.approx(scores.loc[case["id"], columns].to_list(), rel=1e-5)


def test_confidence_intervals_are_bootstrap_intervals_of_the_shown_value(tmp_path):
    run_path = synthetic_run(tmp_path / "run", quality=0.5, seed=1, n=400)
    result = build_report([run_path], tmp_path / "r.html", n_resamples=500)
    page = parse(result.path)
    scores = pd.read_csv(run_path / "scores.csv")
    rows = {cell["data-metric"]: i for i, cell in enumerate(page.values)}
    for metric in ("bleu_1", "rouge_l", "green"):
        low, high = map(float, re.findall(r"-?\d+\.\d+", page.ci_cells[rows[metric]]))
        values = scores[metric].to_numpy()
        assert low < values.mean() < high
        # the 95% interval of a mean: about +-1.96 standard errors
        half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
        assert (high - low) / 2 == pytest.approx(half, rel=0.2)
    # bleu_2 and chexpert_f1 of this run are not the mean of any per-sample column: no interval
    for metric in ("bleu_2", "chexpert_f1", "bleu_3"):
        assert page.ci_cells[rows[metric]] == ""


def test_interval_statistics_recompute_the_corpus_value(tmp_path):
    run = load_run(synthetic_run(tmp_path / "run", quality=0.5, seed=1, n=30))
    rows, statistic = ci_statistic(run, "rouge_l")
    assert statistic.aggregate(rows) == pytest.approx(run.summary["rouge_l"])
    run.scores["chexpert_tp"] = [2.0, 1.0, 0.0] * 10
    run.scores["chexpert_fp"] = [1.0, 0.0, 0.0] * 10
    run.scores["chexpert_fn"] = [0.0, 1.0, 2.0] * 10
    run.summary["chexpert_f1"] = 2 * 30 / (2 * 30 + 10 + 30)  # micro F1 of those counts
    rows, statistic = ci_statistic(run, "chexpert_f1")
    assert "micro" in statistic.name and rows.shape == (30, 3)
    run.summary["chexpert_f1"] = 0.1  # a value the counts do not give: no interval
    assert ci_statistic(run, "chexpert_f1") is None


def test_demo_like_bleu_interval_uses_ngram_counts(tmp_path):
    """Where summary.json's BLEU is pycocoevalcap's corpus BLEU, the interval resamples n-gram counts."""
    result = CliRunner().invoke(main, ["score", "--pred", str(_reports(tmp_path / "pred.jsonl", 1)), "--ref",
                                       str(_reports(tmp_path / "ref.jsonl", 0)), "--metrics", "nlg",
                                       "--out", str(tmp_path / "scored")])
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "scored")
    report = build_report([run.path], tmp_path / "r.html", n_resamples=100)
    page = parse(report.path)
    ci_titles = re.findall(r'<td class="ci" title="([^"]*)">\[', report.path.read_text())
    assert any("n-gram counts" in title for title in ci_titles)
    # a run scored from files: cases without images, no per-class section
    data = case_data(page)
    assert data["has"]["images"] is False and "images" not in data["cases"][0]
    assert data["has"]["boxes"] is False and data["has"]["labels"] is False and data["has"]["judges"] == []
    assert "per-class-section" not in page.ids and "<svg" not in report.path.read_text()


def _reports(path: Path, shift: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "report": FINDINGS[(i + shift) % 3]}) + "\n" for i in range(9)))
    return path


def test_sections_without_data_are_omitted(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"bleu_1": 0.25, "n_studies": 3}))
    page = parse(build_report([run], tmp_path / "bare.html").path)
    assert "metrics" in page.ids
    assert not page.ids & {"cases-section", "per-class-section", "comparison-section", "case-data"}
    assert page.values[0]["text"] == "0.2500"


def test_comparison_and_significance_matrix(tmp_path):
    runs = [synthetic_run(tmp_path / name, quality=q, seed=s, n=80) for name, q, s in
            (("full", 0.8, 1), ("ablated", 0.3, 2), ("other", 0.75, 3))]
    html_text = build_report(runs, tmp_path / "cmp.html", n_resamples=0).path.read_text()
    assert 'id="comparison"' in html_text and 'id="matrix-metric"' in html_text
    loaded = [load_run(r) for r in runs]
    expected = compare_runs(loaded[0], loaded[1:])
    table = html_text.split('id="comparison"')[1].split("</table>")[0]
    starred = 0
    for metric in expected.metrics:
        row = next(r for r in table.split("<tr>") if f'data-value="{metric}"' in r)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        for k, other in enumerate(expected.others):
            entry = expected.entries.get((other, metric))
            marks = re.findall(r'<sup class="stars">(.*?)</sup>', cells[2 + 3 * k])
            assert marks == ([entry.stars] if entry and entry.stars else [])
            starred += bool(marks)
    assert starred >= 3  # the ablated run is worse on every per-sample metric
    # matrix cell (full, ablated) for rouge_l: the two-sided Wilcoxon p of scipy
    matrix = re.search(r'<table class="data matrix" data-matrix="\d+" data-metric="rouge_l".*?</table>', html_text,
                       re.S).group(0)
    a = loaded[0].scores["rouge_l"].to_numpy()
    b = loaded[1].scores["rouge_l"].to_numpy()
    p = scipy_stats.wilcoxon(b, a, alternative="two-sided").pvalue
    assert f"two-sided Wilcoxon p = {p:.4g}" in matrix
    delta = loaded[0].summary["rouge_l"] - loaded[1].summary["rouge_l"]
    assert f"{delta:+.4f}" in matrix and f"{-delta:+.4f}" in matrix


def test_page_text_cannot_break_out_of_the_data_script(tmp_path):
    run = full_run(tmp_path / "run", n=3)
    lines = (run / "predictions.jsonl").read_text().splitlines()
    evil = json.loads(lines[0])
    evil["report"] = "</script><script>window.pwned = 1</script> <!-- x"
    lines[0] = json.dumps(evil)
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    path = build_report([run], tmp_path / "r.html").path
    text = path.read_text()
    assert "window.pwned" not in text.split('id="case-data">')[0]
    data = json.loads(text.split('id="case-data">')[1].split("</script>")[0])
    assert " ".join(g[0] for g in data["cases"][0]["runs"][0]["gen"]) == evil["report"]


def test_linked_thumbnails_are_written_beside_the_page(tmp_path):
    run = full_run(tmp_path / "run", n=4)
    result = build_report([run], tmp_path / "out" / "page.html", images="link")
    assert result.image_mode == "link" and result.files_dir == tmp_path / "out" / "page_files"
    data = case_data(parse(result.path))
    for case in data["cases"]:
        src = case["images"][0]["src"]
        assert src.startswith("page_files/") and (result.path.parent / src).is_file()
    embedded = build_report([run], tmp_path / "out" / "embedded.html", images="embed")
    assert embedded.bytes > result.bytes
    assert build_report([run], tmp_path / "out" / "none.html", images="none").n_images == 0


def test_missing_images_are_counted_not_fatal(tmp_path):
    run = full_run(tmp_path / "run", n=3)
    info = json.loads((run / "run.json").read_text())
    info["data_root"] = str(tmp_path / "nowhere")
    (run / "run.json").write_text(json.dumps(info))
    result = build_report([run], tmp_path / "r.html")
    assert result.missing_images == 3 and result.n_images == 0
    assert "3 image files could not be found" in result.path.read_text()


def test_bad_labels_file_names_file_and_row(tmp_path):
    run = full_run(tmp_path / "run", n=3)
    frame = pd.read_csv(run / "chexpert_labels.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "Edema"] = "yes"
    frame.to_csv(run / "chexpert_labels.csv", index=False)
    with pytest.raises(DataError, match=r"chexpert_labels.csv: row 3: label 'yes' for 'Edema'"):
        read_labels(run / "chexpert_labels.csv")


def test_cli_writes_the_page_and_prints_its_path(tmp_path):
    run = full_run(tmp_path / "run", n=3)
    result = CliRunner().invoke(main, ["report", str(run), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(run / "report.html")
    assert (run / "report.html").is_file()
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "run directory not found" in missing.output


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    run = full_run(tmp_path / "run", n=1)
    image_path = tmp_path / "images_root" / "s000" / "0.png"
    pixels = np.linspace(0, 4095, 200 * 160).reshape(160, 200).astype(np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(pixels).save(image_path)
    assert Image.open(image_path).mode.startswith("I")
    result = build_report([run], tmp_path / "r.html", images="link")
    thumb = np.asarray(Image.open(result.files_dir / "s000_0.jpg"))
    assert thumb.min() < 10 and thumb.max() > 245 and 100 < thumb.mean() < 155  # the full grey range, not white
