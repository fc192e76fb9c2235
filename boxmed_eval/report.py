"""``boxmed-eval report``: one self-contained HTML page for one run or a comparison of runs.

The page holds the runs' provenance, the metric table with bootstrap confidence intervals, the
per-class CheXpert table and chart, for several runs the ``compare`` table (Wilcoxon stars)
and a significance matrix, and a case browser (one row per study, sortable and filterable;
each case shows the image with reference and predicted boxes, both findings with matching
sentences highlighted, the reasoning, the CheXpert labels of both sides and the judges'
replies). Sections without data are left out.

Everything is computed here; the template (``report_assets/``) only lays it out, and the page's
script only sorts, filters and draws the case it is asked for. Nothing is fetched when the page
is opened: styles and script are inline, thumbnails are embedded as JPEG data URLs, or written
beside the page and linked relative to it (``images="link"``), which keeps a 3,858-study page
small.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.records import CHEXPERT_CLASSES, Box, Prediction, Study, atomic_write_text, read_studies
from boxmed_eval.rundata import GREEN_CRITERIA, PREDICTIONS_JSONL, RunData, read_predictions
from boxmed_eval.stats import (CE_COUNT_COLUMNS, MEAN, PER_SAMPLE_PROXIES, CorpusStatistic, bleu_statistic,
                               bleu_sufficient_statistics, ce_micro_statistic, compare_runs, paired_bootstrap, stars)
from boxmed_eval.tables import STANDARD_METRICS, Cell, Table, comparison_table, metric_label, per_class_table

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "report_assets"
IMAGE_MODES: tuple[str, ...] = ("auto", "embed", "link", "none")
AUTO_EMBED_LIMIT = 1000
"""``images="auto"`` embeds the thumbnails of up to this many studies (a page of about 12 MB
with 256-pixel thumbnails) and links them beyond: embedded, a 3,858-study MIMIC-CXR test split
makes a 44 MB page, linked an 8.4 MB one (benchmarks/bench_report.py)."""
REFERENCES_JSONL = "references.jsonl"
LABELS_CSV = "chexpert_labels.csv"
JUDGE_TABLES = {"green": "green_replies.csv", "gema": "gema_replies.csv"}
DIGITS = 4  # the metric table shows 4 decimals, as the CLI's summary print-out
THUMBNAIL_QUALITY = 70

# Label encoding in the page's data: one character per CheXpert class, in CHEXPERT_CLASSES order.
_LABEL_CODE = {"1": "1", "0": "0", "-1": "u", "": "."}

_TAG_RE = re.compile(r"</?(think|answer)>")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD_RE = re.compile(r"[a-z0-9]+")
CLOSE_MATCH = 0.5  # token Jaccard from which two sentences count as a close (not exact) match


# ---------------------------------------------------------------------------- sentences


@dataclass
class SentenceMatch:
    """Matching sentences of a reference and a generated report. ``*_level``: 2 exact match
    (same words), 1 close match (token Jaccard >= CLOSE_MATCH), 0 none; ``*_partner``: index of
    the best sentence on the other side (-1 for none)."""

    reference: list[str]
    generated: list[str]
    reference_level: list[int]
    generated_level: list[int]
    reference_partner: list[int]
    generated_partner: list[int]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.split(text or "") if s.strip()]


def _words(sentence: str) -> tuple[str, ...]:
    return tuple(_WORD_RE.findall(sentence.lower()))


def match_sentences(reference: str, generated: str) -> SentenceMatch:
    """Pair each sentence with its most similar sentence on the other side (by word sets)."""
    ref, gen = split_sentences(reference), split_sentences(generated)
    ref_words, gen_words = [_words(s) for s in ref], [_words(s) for s in gen]

    def best(words: tuple[str, ...], others: list[tuple[str, ...]]) -> tuple[int, int]:
        top, where = 0.0, -1
        for index, other in enumerate(others):
            if words and words == other:
                return 2, index
            a, b = set(words), set(other)
            score = len(a & b) / len(a | b) if a | b else 0.0
            if score > top:
                top, where = score, index
        return (1, where) if top >= CLOSE_MATCH else (0, -1)

    ref_best = [best(w, gen_words) for w in ref_words]
    gen_best = [best(w, ref_words) for w in gen_words]
    return SentenceMatch(ref, gen, [lv for lv, _ in ref_best], [lv for lv, _ in gen_best],
                         [p for _, p in ref_best], [p for _, p in gen_best])


# ---------------------------------------------------------------------------- metric table


@dataclass
class MetricCell:
    value: float | None
    ci: tuple[float, float] | None = None
    ci_method: str = ""

    @property
    def text(self) -> str:
        return _fmt(self.value)

    @property
    def ci_text(self) -> str:
        return f"[{self.ci[0]:.{DIGITS}f}, {self.ci[1]:.{DIGITS}f}]" if self.ci else ""

    @property
    def raw(self) -> str:
        return repr(self.value) if self.value is not None else ""


@dataclass
class MetricRow:
    metric: str
    label: str
    cells: list[MetricCell]


def _fmt(value: float | None, digits: int = DIGITS) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def ci_statistic(run: RunData, metric: str, bleu_rows: np.ndarray | None = None
                 ) -> tuple[np.ndarray, CorpusStatistic] | None:
    """The per-study rows and the corpus statistic that recompute ``metric``'s summary.json value,
    or None when none does (e.g. METEOR's corpus score, macro F1): only then is a resampled
    interval an interval of *that* number. Tried in order: corpus BLEU from n-gram counts
    (``bleu_rows``, see :func:`bleu_rows`), corpus micro CheXpert P/R/F1 from per-study
    TP/FP/FN, the mean of the metric's per-study scores (studies without a score left out)."""
    value = run.summary.get(metric)
    scores = run.scores
    if value is None or not math.isfinite(value) or scores is None:
        return None
    candidates: list[tuple[np.ndarray, CorpusStatistic]] = []
    if re.fullmatch(r"bleu_[1-4]", metric) and bleu_rows is not None:
        candidates.append((bleu_rows, bleu_statistic(int(metric[-1]))))
    if metric in PER_SAMPLE_PROXIES and all(c in scores.columns for c in CE_COUNT_COLUMNS):
        rows = scores[list(CE_COUNT_COLUMNS)].to_numpy(dtype=float)
        if not np.isnan(rows).any():
            candidates.append((rows, ce_micro_statistic(metric)))
    if metric in scores.columns:
        column = scores[metric].to_numpy(dtype=float)
        column = column[np.isfinite(column)]
        if len(column):
            candidates.append((column[:, None], MEAN))
    for rows, statistic in candidates:
        if _close(statistic.aggregate(rows), value):
            return rows, statistic
    return None


def bleu_rows(run: RunData, texts: tuple[dict[str, str], dict[str, str]] | None) -> np.ndarray | None:
    """Per-study BLEU n-gram counts of the run's studies (scores.csv order), texts prepared with
    the run's recorded NLG preprocessing; None without texts or without that convention."""
    from boxmed_eval.metrics.preprocess import get_preprocessor

    name = run.conventions.get("nlg_preprocessing")
    ids = list(run.scores.index) if run.scores is not None else []
    if texts is None or not name or not ids:
        return None
    references, generated = texts
    if not all(i in references and i in generated for i in ids):
        return None
    try:
        clean = get_preprocessor(str(name))
    except BoxmedError:
        return None
    return bleu_sufficient_statistics({i: clean(references[i]) for i in ids}, {i: clean(generated[i]) for i in ids},
                                      ids)


def bootstrap_interval(rows: np.ndarray, statistic: CorpusStatistic, *, n_resamples: int, seed: int,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of one run's corpus value: the paired bootstrap of ``compare --test
    bootstrap`` with the run on both sides, so one resampling code serves both."""
    result = paired_bootstrap(rows, rows, statistic=statistic, n_resamples=n_resamples, seed=seed,
                              confidence=confidence)
    return result.base_ci


def metric_rows(runs: Sequence[RunData], texts: Sequence[tuple[dict[str, str], dict[str, str]] | None], *,
                n_resamples: int, seed: int) -> list[MetricRow]:
    """One row per metric of any run (the paper's columns first, then summary.json's order), one
    cell per run."""
    order = [m for m in STANDARD_METRICS if any(m in run.summary for run in runs)]
    for run in runs:
        order += [m for m in run.summary if m not in order]
    counts = [bleu_rows(run, run_texts) if any(re.fullmatch(r"bleu_[1-4]", m) for m in run.summary) else None
              for run, run_texts in zip(runs, texts)]
    rows = []
    for metric in order:
        cells = []
        for run, run_bleu in zip(runs, counts):
            value = run.summary.get(metric)
            if value is None or not math.isfinite(value):
                cells.append(MetricCell(value))
                continue
            found = ci_statistic(run, metric, run_bleu) if n_resamples > 0 else None
            if found is None:
                cells.append(MetricCell(value))
                continue
            data, statistic = found
            ci = bootstrap_interval(data, statistic, n_resamples=n_resamples, seed=seed)
            cells.append(MetricCell(value, ci, statistic.name))
        rows.append(MetricRow(metric, metric_label(metric), cells))
    return rows


# ---------------------------------------------------------------------------- tables as HTML


def table_html(table: Table, *, table_id: str = "") -> str:
    """A tables.Table as an HTML table (the same cells ``compare`` / ``table3`` print)."""
    out = [f'<table class="data"{f" id={_attr(table_id)}" if table_id else ""}>']
    if table.caption:
        out.append(f"<caption>{html.escape(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr></thead><tbody>")
    for group, rows in table.groups:
        if group is not None:
            out.append(f'<tr class="group"><td colspan="{len(table.headers)}">{html.escape(group)}</td></tr>')
        for row in rows:
            out.append("<tr>" + "".join(_cell_html(c, i < table.label_columns) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    if table.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>")
    return "".join(out)


def _attr(value: str) -> str:
    return '"' + html.escape(value, quote=True) + '"'


def _cell_html(cell: Cell, label: bool) -> str:
    text = html.escape(cell.text)
    if cell.bold:
        text = f"<b>{text}</b>"
    if cell.marks:
        text += f'<sup class="stars">{html.escape(cell.marks)}</sup>'
    raw = cell.value if isinstance(cell.value, str) else repr(cell.value)
    value = "" if cell.value is None else f" data-value={_attr(raw)}"
    return f'<td class="{"label" if label else "num"}"{value}>{text}</td>'


# ---------------------------------------------------------------------------- comparison


@dataclass
class MatrixCell:
    text: str  # delta (row - column) with stars
    title: str  # p-value, as a tooltip
    stars: str = ""


@dataclass
class SignificanceMatrix:
    metric: str
    label: str
    names: list[str]
    cells: list[list[MatrixCell | None]]  # None on the diagonal


def comparison_html(runs: Sequence[RunData], alternative: str) -> tuple[str, list[str]]:
    """The ``compare`` table of runs[1:] against runs[0] (Wilcoxon), or a note why not."""
    try:
        comparison = compare_runs(runs[0], list(runs[1:]), alternative=alternative)  # type: ignore[arg-type]
    except DataError as exc:
        return "", [f"No comparison: {exc}"]
    return table_html(comparison_table(comparison), table_id="comparison"), []


def significance_matrices(runs: Sequence[RunData]) -> tuple[list[SignificanceMatrix], list[str]]:
    """For every metric with per-sample scores in all runs: each pair's two-sided Wilcoxon test
    (a matrix is symmetric, so no direction is assumed)."""
    names = _run_names(runs)
    tests: dict[tuple[int, int], Any] = {}
    notes: list[str] = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            try:
                tests[(i, j)] = compare_runs(runs[i], [runs[j]], alternative="two-sided", names=[names[i], names[j]])
            except DataError as exc:
                notes.append(str(exc))
    if not tests:
        return [], notes
    metrics = [m for m in next(iter(tests.values())).metrics
               if all((c.others[0], m) in c.entries for c in tests.values())]
    matrices = []
    for metric in metrics:
        cells: list[list[MatrixCell | None]] = [[None] * len(runs) for _ in runs]
        for (i, j), comparison in tests.items():
            entry = comparison.entries[(comparison.others[0], metric)]
            a, b = comparison.values[comparison.base].get(metric), comparison.values[comparison.others[0]].get(metric)
            p = entry.p_value
            title = f"two-sided Wilcoxon p = {p:.4g}" if p is not None and math.isfinite(p) else "no test (no differences)"
            mark = stars(p)
            for row, col, sign in ((i, j, 1.0), (j, i, -1.0)):
                delta = sign * (a - b) if a is not None and b is not None else None
                text = f"{delta:+.{DIGITS}f}" if delta is not None and math.isfinite(delta) else "-"
                cells[row][col] = MatrixCell(text, title, mark)
        matrices.append(SignificanceMatrix(metric, metric_label(metric), names, cells))
    return matrices, notes


def _run_names(runs: Sequence[RunData]) -> list[str]:
    names = [run.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run.path) for run in runs]


# ---------------------------------------------------------------------------- per class


@dataclass
class ClassChart:
    """Grouped horizontal bars of per-class F1: geometry computed here, drawn by the template."""

    width: int
    height: int
    label_width: int
    bar_width: int
    rows: list[dict[str, Any]]
    legend: list[dict[str, Any]]


RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def per_class_chart(runs: Sequence[RunData], names: Sequence[str], metric: str = "f1") -> ClassChart | None:
    with_table = [(run, name) for run, name in zip(runs, names) if run.per_class is not None]
    if not with_table:
        return None
    order = ["No Finding", *[c for c in CHEXPERT_CLASSES if c != "No Finding"]]
    for run, _ in with_table:
        order += [c for c in run.per_class.index if c not in order]  # type: ignore[union-attr]
    order = [c for c in order if any(c in run.per_class.index for run, _ in with_table)]  # type: ignore[union-attr]
    bar_h, gap, label_w, bar_w = 12, 8, 190, 360
    group_h = bar_h * len(with_table) + gap
    rows = []
    for k, category in enumerate(order):
        bars = []
        for r, (run, name) in enumerate(with_table):
            frame = run.per_class
            value = float(frame.loc[category, metric]) if category in frame.index else math.nan  # type: ignore[union-attr]
            shown = value if math.isfinite(value) else 0.0
            bars.append({"y": k * group_h + r * bar_h, "w": round(max(0.0, min(1.0, shown)) * bar_w, 2),
                         "color": RUN_COLORS[r % len(RUN_COLORS)], "text": _fmt(value, 3), "run": name})
        rows.append({"category": category, "y": k * group_h, "mid": k * group_h + bar_h * len(with_table) / 2,
                     "bars": bars})
    legend = [{"name": name, "color": RUN_COLORS[r % len(RUN_COLORS)]} for r, (_, name) in enumerate(with_table)]
    return ClassChart(label_w + bar_w + 60, group_h * len(order) + 24, label_w, bar_w, rows, legend)


# ---------------------------------------------------------------------------- cases


@dataclass
class ImageSource:
    """How images reach the page: embedded thumbnails, thumbnails beside it, or none."""

    mode: str = "embed"
    size: int = 256
    files_dir: Path | None = None  # link mode: where thumbnails are written
    files_prefix: str = ""  # link mode: files_dir relative to the page
    missing: int = 0
    bytes: int = 0
    count: int = 0
    _cache: dict[str, tuple[str, int, int] | None] = field(default_factory=dict)

    def load(self, path: Path, key: str) -> tuple[str, int, int] | None:
        """(src, original width, original height), or None when the file cannot be read."""
        cache_key = str(path)
        if cache_key in self._cache:
            return self._cache[cache_key]
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
                thumb = _grey8(image)
                thumb.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                thumb.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning("report: cannot read image %s (%s); the case is shown without it", path, exc)
            self.missing += 1
            self._cache[cache_key] = None
            return None
        data = buffer.getvalue()
        self.count += 1
        self.bytes += len(data)
        if self.mode == "link":
            assert self.files_dir is not None
            self.files_dir.mkdir(parents=True, exist_ok=True)
            name = _safe_name(key) + ".jpg"
            (self.files_dir / name).write_bytes(data)
            src = f"{self.files_prefix}/{name}"
        else:
            src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        self._cache[cache_key] = (src, width, height)
        return self._cache[cache_key]


def _grey8(image: Any) -> Any:
    """An 8-bit grey copy. 16-bit and float images (PNG radiographs) are scaled min..max first:
    PIL's convert("L") would clip them to 255."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.astype(np.uint8))
    return image.convert("L")


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:150]


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """chexpert_labels.csv -> {side: {id: one character per class}} (see _LABEL_CODE)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({exc})", file=path, fix="re-score the run with the chexpert metric") from None
    missing = [c for c in ("id", "side", *CHEXPERT_CLASSES) if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {', '.join(missing)}", file=path,
                        fix="re-score the run with the chexpert metric to rewrite it")
    out: dict[str, dict[str, str]] = {"reference": {}, "prediction": {}}
    values = frame[list(CHEXPERT_CLASSES)].to_numpy(dtype=str)
    for number, (study_id, side, row) in enumerate(zip(frame["id"], frame["side"], values), start=2):
        if side not in out:
            raise DataError(f"side {side!r} is neither 'reference' nor 'prediction'", file=path, record=f"row {number}")
        codes = []
        for name, raw in zip(CHEXPERT_CLASSES, row):
            value = raw.strip()
            value = {"1.0": "1", "0.0": "0", "-1.0": "-1"}.get(value, value)
            if value not in _LABEL_CODE:
                raise DataError(f"label {value!r} for {name!r} is not 1, 0, -1 or blank", file=path,
                                record=f"row {number}")
            codes.append(_LABEL_CODE[value])
        out[side][str(study_id)] = "".join(codes)
    return out


def read_judge_replies(path: Path) -> dict[str, dict[str, str]]:
    """green_replies.csv / gema_replies.csv -> {id: {"reply": ..., "problem": ...}}."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({exc})", file=path, fix="re-score the run with the judge metric") from None
    if "id" not in frame.columns or "reply" not in frame.columns:
        raise DataError("needs columns 'id' and 'reply'", file=path, fix="re-score the run with the judge metric")
    problems = frame["parse_problem"] if "parse_problem" in frame.columns else [""] * len(frame)
    return {str(i): {"reply": r, "problem": p} for i, r, p in zip(frame["id"], frame["reply"], problems)}


def _green_explanation(reply: str) -> str:
    try:
        from boxmed_eval.metrics.green import clean_green_reply_official
    except ImportError:  # pragma: no cover - same package
        return reply
    return clean_green_reply_official(reply).strip() or reply


GEMA_COUNT_PREFIX = "gema_"


@dataclass
class RunCases:
    """What the case browser needs of one run (loaded once)."""

    name: str
    predictions: dict[str, Prediction]
    studies: dict[str, Study]
    labels: dict[str, dict[str, str]]
    judges: dict[str, dict[str, dict[str, str]]]
    columns: list[str]
    scores: dict[str, list[float | None]]  # id -> per-sample scores in ``columns`` order
    data_root: Path | None

    def texts(self) -> tuple[dict[str, str], dict[str, str]] | None:
        if not self.studies or not self.predictions:
            return None
        return ({i: s.findings for i, s in self.studies.items()}, {i: p.report for i, p in self.predictions.items()})


def load_cases(run: RunData, name: str, data_root: Path | None = None) -> RunCases:
    path = run.path
    predictions = read_predictions(path / PREDICTIONS_JSONL) if (path / PREDICTIONS_JSONL).exists() else {}
    studies = (read_studies(path / REFERENCES_JSONL, fix="references.jsonl is written by `boxmed-eval run` / "
                            "`score`; re-run to rewrite it") if (path / REFERENCES_JSONL).exists() else {})
    labels = read_labels(path / LABELS_CSV) if (path / LABELS_CSV).exists() else {}
    judges = {judge: read_judge_replies(path / table) for judge, table in JUDGE_TABLES.items()
              if (path / table).exists()}
    columns = _case_columns(list(run.scores.columns)) if run.scores is not None else []
    scores: dict[str, list[float | None]] = {}
    if run.scores is not None:
        # one conversion for all rows (a .loc per study costs seconds on a 3,858-study run)
        for study_id, row in zip(run.scores.index, run.scores[columns].to_numpy(dtype=float).tolist()):
            scores[str(study_id)] = [_number(v) for v in row]
    root = data_root or (Path(run.info["data_root"]) if run.info.get("data_root") else None)
    return RunCases(name, predictions, studies, labels, judges, columns, scores, root)


CASE_COLUMNS_FIRST = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "chexpert_example_f1", "green", "gema_score",
                      "grounding_miou", "radgraph_partial", "bertscore", "radcliq_v1")
"""Per-sample columns the case table shows first (the paper's metrics); the others follow."""


def _case_columns(columns: list[str]) -> list[str]:
    first = [c for c in CASE_COLUMNS_FIRST if c in columns]
    return first + [c for c in columns if c not in first]


def _resolve_image(raw: str, run_path: Path, data_root: Path | None) -> Path | None:
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [c for c in ((data_root / path) if data_root else None,
                                                                 run_path / path, path) if c is not None]
    return next((c for c in candidates if c.is_file()), None)


def _box_list(boxes: Sequence[Box], sizes: Mapping[int, tuple[int, int]]) -> list[list[Any]]:
    """[x1, y1, x2, y2, image index, label] in the pixels of the original image as loaded
    (a box records the image size it refers to; scaled when that differs)."""
    out = []
    for box in boxes:
        width, height = sizes.get(box.image_index, (box.image_width or 0, box.image_height or 0))
        sx = width / box.image_width if box.image_width and width else 1.0
        sy = height / box.image_height if box.image_height and height else 1.0
        label = box.category or box.region or box.phrase
        detail = " | ".join(p for p in (box.phrase, box.category, box.region) if p)
        out.append([round(box.x1 * sx, 2), round(box.y1 * sy, 2), round(box.x2 * sx, 2), round(box.y2 * sy, 2),
                    box.image_index, label, detail])
    return out


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return float(f"{number:.6g}") if math.isfinite(number) else None


def build_cases(runs: Sequence[RunData], loaded: Sequence[RunCases], images: ImageSource,
                progress: bool = False) -> dict[str, Any] | None:
    """The case browser's data, or None when no run has predictions. Cases are the first run's
    studies in its order, then any further ids of the other runs."""
    if not any(c.predictions for c in loaded):
        return None
    ids: list[str] = []
    seen: set[str] = set()
    for cases in loaded:
        for source in (cases.studies, cases.predictions):
            for study_id in source:
                if study_id not in seen:
                    seen.add(study_id)
                    ids.append(study_id)
    from tqdm.auto import tqdm

    records = []
    any_images = any_boxes = any_labels = any_reasoning = False
    judges_seen: set[str] = set()
    for study_id in tqdm(ids, desc="report cases", disable=not progress, leave=False):
        study = next((c.studies[study_id] for c in loaded if study_id in c.studies), None)
        run_path = next((run.path for run, c in zip(runs, loaded) if study_id in c.studies), runs[0].path)
        root = next((c.data_root for c in loaded if study_id in c.studies), None)
        record: dict[str, Any] = {"id": study_id}
        sizes: dict[int, tuple[int, int]] = {}
        if study is not None:
            wanted = {0} | {b.image_index for b in study.boxes}
            wanted |= {b.image_index for c in loaded if study_id in c.predictions for b in c.predictions[study_id].boxes}
            shown = []
            if images.mode != "none":
                for index in sorted(i for i in wanted if 0 <= i < len(study.image_paths)):
                    path = _resolve_image(study.image_paths[index], run_path, root)
                    if path is None:
                        images.missing += 1
                        continue
                    loaded_image = images.load(path, f"{study_id}_{index}")
                    if loaded_image is None:
                        continue
                    src, width, height = loaded_image
                    sizes[index] = (width, height)
                    shown.append({"i": index, "src": src, "w": width, "h": height})
            if shown:
                record["images"] = shown
                any_images = True
            if study.boxes:
                record["gt"] = _box_list(study.boxes, sizes)
                any_boxes = True
        per_run = []
        for cases in loaded:
            prediction = cases.predictions.get(study_id)
            if prediction is None:
                per_run.append(None)
                continue
            entry: dict[str, Any] = {}
            reference = study.findings if study is not None else ""
            match = match_sentences(reference, prediction.report)
            entry["gen"] = [[s, lv, p] for s, lv, p in zip(match.generated, match.generated_level,
                                                           match.generated_partner)]
            entry["refm"] = [[lv, p] for lv, p in zip(match.reference_level, match.reference_partner)]
            if "ref" not in record and study is not None:
                record["ref"] = match.reference
            if prediction.reasoning and prediction.reasoning.strip():
                entry["reasoning"] = _TAG_RE.sub("", prediction.reasoning).strip()
                any_reasoning = True
            if prediction.boxes:
                entry["boxes"] = _box_list(prediction.boxes, sizes)
                any_boxes = True
            if study_id in cases.scores:
                entry["s"] = cases.scores[study_id]
            labels_ref = cases.labels.get("reference", {}).get(study_id)
            labels_gen = cases.labels.get("prediction", {}).get(study_id)
            if labels_ref is not None and labels_gen is not None:
                entry["lr"], entry["lg"] = labels_ref, labels_gen
                any_labels = True
            for judge, replies in cases.judges.items():
                if study_id in replies:
                    reply = replies[study_id]
                    text = _green_explanation(reply["reply"]) if judge == "green" else reply["reply"]
                    entry.setdefault("judges", {})[judge] = {"reply": text, "problem": reply["problem"]}
                    judges_seen.add(judge)
            per_run.append(entry)
        record["runs"] = per_run
        records.append(record)
    green_columns = [[label, list(aliases)] for _, label, aliases in GREEN_CRITERIA]
    return {"classes": list(CHEXPERT_CLASSES), "runs": [{"name": c.name, "columns": c.columns,
                                                          "labels": [metric_label(m) for m in c.columns]}
                                                         for c in loaded],
            "cases": records, "has": {"images": any_images, "boxes": any_boxes, "labels": any_labels,
                                      "reasoning": any_reasoning, "judges": sorted(judges_seen)},
            "green_columns": green_columns}


# ---------------------------------------------------------------------------- provenance


PROVENANCE_FIELDS = ("model", "model_args", "dataset", "split", "data_root", "dataset_options", "limit", "seed",
                     "n_studies", "status", "created", "git_revision", "model_provenance", "references", "metrics")


def provenance(run: RunData) -> dict[str, Any]:
    info = run.info
    fields = [(key, _plain(info[key])) for key in PROVENANCE_FIELDS if key in info and info[key] not in (None, {}, [])]
    fields += [(key, _plain(value)) for key, value in info.items()
               if key not in PROVENANCE_FIELDS and key not in ("versions", "timings") and value not in (None, {}, [])]
    extra = run.summary_extra
    versions = info.get("versions") or {}
    headline = [f"{key} {info[key]}" for key in ("model", "dataset", "split") if info.get(key)]
    n_studies = extra.get("n_studies", info.get("n_studies"))
    if n_studies is not None:
        headline.append(f"{n_studies} studies")
    if versions.get("boxmed-eval"):
        headline.append(f"boxmed-eval {versions['boxmed-eval']}")
    if info.get("git_revision"):
        headline.append(f"git {str(info['git_revision'])[:12]}")
    if info.get("created"):
        headline.append(f"created {info['created']}")
    return {"name": run.name, "path": str(run.path), "fields": fields, "headline": headline,
            "versions": versions, "timings": info.get("timings") or {},
            "conventions": run.conventions, "messages": [str(m) for m in extra.get("messages") or []],
            "skipped": extra.get("metrics_skipped") or {},
            "counts": [(k, v) for k, v in extra.items() if k not in ("messages", "metrics_skipped", "conventions",
                                                                      "metrics_requested", "tables")]}


def _plain(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# ---------------------------------------------------------------------------- the page


@dataclass
class ReportResult:
    path: Path
    bytes: int
    image_mode: str
    n_cases: int
    n_images: int
    image_bytes: int
    missing_images: int
    files_dir: Path | None


def _json_for_script(obj: Any) -> str:
    # "<" escaped so that no text in a report can close the <script> element that holds it.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(ASSETS)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(context: Mapping[str, Any]) -> str:
    """The page from its context (see build_report for the keys)."""
    environment = _environment()
    assets = {name: (ASSETS / name).read_text(encoding="utf-8") for name in ("report.css", "report.js")}
    return environment.get_template("report.html.j2").render(**context, css=assets["report.css"],
                                                              js=assets["report.js"])


def build_report(run_paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 images: str = "auto", thumbnail: int = 256, data_root: str | os.PathLike[str] | None = None,
                 alternative: str = "less", n_resamples: int = 1000, seed: int = 12345,
                 title: str | None = None, progress: bool = False) -> ReportResult:
    """Write the report of ``run_paths`` to ``out``. The first run is the base of the
    comparison table (as ``compare BASE OTHER...``)."""
    from boxmed_eval import __version__
    from boxmed_eval.rundata import load_run

    if images not in IMAGE_MODES:
        raise BoxmedError(f"unknown --images {images!r}; use one of {', '.join(IMAGE_MODES)}")
    if thumbnail < 16:
        raise BoxmedError(f"--thumbnail {thumbnail}: thumbnails need at least 16 pixels")
    if not run_paths:
        raise BoxmedError("pass at least one run directory")
    out = Path(out)
    runs = [load_run(path) for path in run_paths]
    names = _run_names(runs)
    root = Path(data_root) if data_root else None
    loaded = [load_cases(run, name, root) for run, name in zip(runs, names)]
    if images == "auto":
        with_images = {i for c in loaded for i, study in c.studies.items() if study.image_paths}
        images = "embed" if len(with_images) <= AUTO_EMBED_LIMIT else "link"
    source = ImageSource(mode=images, size=thumbnail)
    if images == "link":
        source.files_dir = out.parent / f"{out.stem}_files"
        source.files_prefix = source.files_dir.name
    cases = build_cases(runs, loaded, source, progress=progress)
    rows = metric_rows(runs, [c.texts() for c in loaded], n_resamples=n_resamples, seed=seed)
    comparison, notes = ("", [])
    matrices: list[SignificanceMatrix] = []
    scored = [run for run in runs if run.scores is not None]
    if len(runs) > 1:
        if len(scored) == len(runs):
            comparison, notes = comparison_html(runs, alternative)
            matrices, matrix_notes = significance_matrices(runs)
            # a pairing problem is reported once, not once per test that ran into it
            notes += [f"Significance matrix: {n}" for n in matrix_notes if not any(n in seen for seen in notes)]
        else:
            notes.append("No significance tests: " + ", ".join(n for r, n in zip(runs, names) if r.scores is None)
                         + " has no scores.csv.")
    per_class = [(name, table_html(per_class_table(run), table_id=f"per-class-{k}"))
                 for k, (run, name) in enumerate(zip(runs, names)) if run.per_class is not None]
    ci_methods = sorted({c.ci_method for row in rows for c in row.cells if c.ci_method})
    context = {
        "title": title or ("boxmed-eval report: " + ", ".join(names)),
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__, "names": names, "provenance": [provenance(run) for run in runs],
        "metric_rows": rows, "n_resamples": n_resamples, "seed": seed, "ci_methods": ci_methods,
        "comparison": comparison, "comparison_notes": notes, "matrices": matrices,
        "per_class": per_class, "chart": per_class_chart(runs, names),
        "cases_json": _json_for_script(cases) if cases else "", "cases": cases,
        "missing_images": source.missing, "image_mode": images,
    }
    page = render(context)
    atomic_write_text(out, page)
    return ReportResult(out, len(page.encode("utf-8")), images, len(cases["cases"]) if cases else 0, source.count,
                        source.bytes, source.missing, source.files_dir if images == "link" else None)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


__all__ = ["build_report", "render", "match_sentences", "split_sentences", "metric_rows", "ci_statistic",
           "bootstrap_interval", "table_html", "significance_matrices", "per_class_chart", "build_cases",
           "read_labels", "read_judge_replies", "IMAGE_MODES", "ReportResult", "human_size"]
