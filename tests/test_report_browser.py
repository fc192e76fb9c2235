"""The report of a demo run in a real browser (headless Chromium over the DevTools protocol):
what a person sees. Skipped when chromium or websocket-client is missing.

``BOXMED_REPORT_SCREENSHOT=docs/report.png pytest tests/test_report_browser.py`` also keeps the
screenshot (the README's)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from boxmed_eval.cli import main
from boxmed_eval.records import CHEXPERT_CLASSES
from tests.browser import Browser

pytestmark = pytest.mark.skipif(Browser.available() is not None, reason=str(Browser.available()))


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-demo") / "demo-retrieval"
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        # the demo cache of the whole session (conftest's autouse fixture is per test, not per module)
        if "BOXMED_CACHE" not in os.environ:
            patch.setenv("BOXMED_CACHE", str(tmp_path_factory.getbasetemp() / "boxmed-cache"))
        result = runner.invoke(main, ["run", "--model", "retrieval", "--dataset", "demo", "--limit", "24",
                                      "--metrics", "nlg,chexpert,grounding", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(out), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser(demo_report: Path):
    with Browser(width=1280, height=1000) as b:
        b.open(demo_report / "report.html")
        yield b
        assert b.errors == []  # no uncaught exception in the page's script


def test_metric_table_shows_summary_json(demo_report, browser):
    summary = json.loads((demo_report / "summary.json").read_text())
    cells = browser.js("""Array.from(document.querySelectorAll('#metrics td.value')).map(td =>
        [td.dataset.metric, td.dataset.value, td.innerText.trim(), td.offsetParent !== null])""")
    shown = {metric: (float(raw), text, visible) for metric, raw, text, visible in cells}
    expected = {k: v for k, v in summary.items() if isinstance(v, float) and not k.endswith("_seconds")}
    assert set(expected) <= set(shown) and len(expected) >= 20
    for metric, value in expected.items():
        raw, text, visible = shown[metric]
        assert raw == value and text == f"{value:.4f}" and visible, metric


def _shown_ids(browser: Browser) -> list[str]:
    return browser.js("Array.from(document.querySelectorAll('#cases tbody tr')).map(tr => tr.dataset.id)")


def test_sorting_by_a_metric_reorders_the_cases(demo_report, browser):
    scores = pd.read_csv(demo_report / "scores.csv", dtype={"id": str}).set_index("id")
    before = _shown_ids(browser)
    assert before == list(scores.index)  # the run's order until a column is clicked
    browser.js("document.querySelector('#cases th[title=\"bleu_4\"]').click()")
    after = _shown_ids(browser)
    assert sorted(after) == sorted(before) and after != before
    values = scores.loc[after, "bleu_4"].to_numpy()
    assert np.all(np.diff(values) <= 1e-6)  # descending: best first
    assert after[0] == scores["bleu_4"].idxmax()
    browser.js("document.querySelector('#cases th[title=\"bleu_4\"]').click()")
    assert np.all(np.diff(scores.loc[_shown_ids(browser), "bleu_4"].to_numpy()) >= -1e-6)


def test_disagreement_filter_keeps_the_cases_whose_labels_differ(demo_report, browser):
    labels = pd.read_csv(demo_report / "chexpert_labels.csv", dtype=str, keep_default_na=False)
    ref = labels[labels.side == "reference"].set_index("id")
    gen = labels[labels.side == "prediction"].set_index("id")
    differ = [i for i in ref.index if any((ref.loc[i, c] == "1") != (gen.loc[i, c] == "1") for c in CHEXPERT_CLASSES)]
    assert 0 < len(differ) < len(ref)
    browser.js("(s => { s.value = '*'; s.dispatchEvent(new Event('change')); })(document.getElementById('filter-class'))")
    try:
        assert sorted(_shown_ids(browser)) == sorted(differ)
        assert browser.js("document.getElementById('case-count').innerText") == f"{len(differ)} of {len(ref)} cases"
    finally:
        browser.js("(s => { s.value = ''; s.dispatchEvent(new Event('change')); })(document.getElementById('filter-class'))")


def test_a_case_shows_its_image_with_its_boxes(demo_report, browser, tmp_path):
    references = {r["id"]: r for r in map(json.loads, (demo_report / "references.jsonl").read_text().splitlines())}
    predictions = {p["id"]: p for p in map(json.loads, (demo_report / "predictions.jsonl").read_text().splitlines())}
    chosen = next(i for i in references if references[i]["boxes"] and predictions[i].get("boxes")
                  and len(references[i]["boxes"]) != len(predictions[i]["boxes"]))
    n_ref = sum(b.get("image_index", 0) == 0 for b in references[chosen]["boxes"])
    n_pred = sum(b.get("image_index", 0) == 0 for b in predictions[chosen]["boxes"])
    browser.js(f"""(s => {{ s.value = {json.dumps(chosen)}; s.dispatchEvent(new Event('input')); }})(
        document.getElementById('case-search'))""")
    assert _shown_ids(browser) == [chosen]
    browser.js("document.querySelector('#cases tbody tr').click()")
    browser.wait_for("document.querySelector('#case-detail svg image') !== null")
    seen = browser.js("""(() => { const svg = document.querySelector('#case-detail svg[data-image="0"]');
        const box = svg.getBoundingClientRect();
        return {ref: svg.querySelectorAll('rect.box-ref').length, pred: svg.querySelectorAll('rect.box-pred').length,
                href: svg.querySelector('image').getAttribute('href').slice(0, 23), width: box.width,
                stroke: getComputedStyle(svg.querySelector('rect.box-ref')).stroke,
                detail: document.getElementById('case-detail').dataset.id}; })()""")
    assert seen["detail"] == chosen
    assert (seen["ref"], seen["pred"]) == (n_ref, n_pred)
    assert seen["href"] == "data:image/jpeg;base64," and seen["width"] > 100
    assert seen["stroke"] == "rgb(26, 150, 65)"  # reference boxes are green
    texts = browser.js("Array.from(document.querySelectorAll('#case-detail .report')).map(d => d.innerText.trim())")
    assert texts[0].split() == references[chosen]["findings"].split()
    assert texts[1].split() == predictions[chosen]["report"].split()

    # the screenshot a person would see: the open case, scrolled into view
    browser.js("document.getElementById('case-detail').scrollIntoView()")
    shot = browser.screenshot(tmp_path / "report.png")
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (1000, 1280)
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # not blank
    keep = os.environ.get("BOXMED_REPORT_SCREENSHOT")
    if keep:
        _save_small(browser, Path(keep), chosen)


def _set(browser: Browser, element: str, value: str, event: str) -> None:
    browser.js(f"""(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('{event}')); }})(
        document.getElementById('{element}'))""")


def _save_small(browser: Browser, target: Path, chosen: str) -> None:
    """The README's screenshot: the cases with boxes, best grounding first, one case open; a small
    palette PNG."""
    _set(browser, "case-search", "", "input")
    key = browser.js("document.querySelector('#cases th[title=\"grounding_miou\"]').dataset.key")
    _set(browser, "filter-metric", key, "change")
    _set(browser, "filter-min", "0.5", "input")
    browser.js("document.querySelector('#cases th[title=\"grounding_miou\"]').click()")
    browser.js(f"(document.querySelector('#cases tbody tr[data-id={json.dumps(chosen)}]') "
               "|| document.querySelector('#cases tbody tr')).click()")
    top = browser.js("document.getElementById('cases-section').getBoundingClientRect().top + window.scrollY")
    height = browser.js("document.getElementById('case-detail').getBoundingClientRect().bottom + window.scrollY")
    raw = target.with_suffix(".raw.png")
    browser.screenshot(raw, clip={"x": 0, "y": max(0, top - 10), "width": 1280, "height": min(1400, height - top + 20)})
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    raw.unlink()


def test_several_runs_compare_and_switch(tmp_path):
    from tests.test_report import full_run

    from boxmed_eval.report import build_report

    runs = [full_run(tmp_path / name, quality=q, seed=s, n=30) for name, q, s in (("full", 0.8, 1), ("ablated", 0.3, 2))]
    page = build_report(runs, tmp_path / "two.html", n_resamples=0).path
    scores = [pd.read_csv(r / "scores.csv", dtype={"id": str}).set_index("id") for r in runs]
    with Browser() as b:
        b.open(page)
        assert b.js("document.querySelector('#comparison').offsetParent !== null")
        visible = "Array.from(document.querySelectorAll('table.matrix')).filter(t => !t.hidden).map(t => t.dataset.metric)"
        first = b.js(visible)
        assert len(first) == 1
        b.js("(s => { s.value = '1'; s.dispatchEvent(new Event('change')); })(document.getElementById('matrix-metric'))")
        assert len(b.js(visible)) == 1 and b.js(visible) != first
        cell = "document.querySelector('#cases tbody tr td:nth-child(2)').innerText"
        study = b.js("document.querySelector('#cases tbody tr').dataset.id")
        assert b.js("document.querySelector('#cases th:nth-child(2)').title") == "bleu_1"
        assert b.js(cell) == f"{scores[0].loc[study, 'bleu_1']:.4f}"
        b.js("(s => { s.value = '1'; s.dispatchEvent(new Event('change')); })(document.getElementById('case-run'))")
        assert b.js(cell) == f"{scores[1].loc[study, 'bleu_1']:.4f}"
        b.js("document.querySelector('#cases tbody tr').click()")
        assert b.js("document.querySelectorAll('#case-detail .judge[data-judge=green] pre').length") == 1
        assert b.errors == []
