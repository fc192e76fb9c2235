"""Tables of the paper from runs: leaderboards (Tables 1–2), per-class CheXpert (Table 3),
ablations (Tables 4–5) and run-vs-run comparisons, rendered as Markdown, LaTeX (booktabs) or CSV.

Numbers are shown with three decimals, like the paper; ``-`` marks a metric a method does not
report. "Best" (bold) is decided on the displayed (rounded) values, so two entries that read
the same are both bold.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES
from boxmed_eval.rundata import RunData, load_run

FORMATS: tuple[str, ...] = ("markdown", "latex", "csv")
MISSING = "-"
DIGITS = 3

METRIC_LABELS: dict[str, str] = {
    "bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4",
    "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr", "gema_score": "GEMA-Score",
    "chexpert_f1": "CheXpert", "chexpert_precision": "CheXpert P", "chexpert_recall": "CheXpert R",
    "chexpert_example_f1": "CheXpert F1 (ex.)", "chexpert_macro_f1": "CheXpert macro F1",
    "green": "GreenScore",
    # ReXrank's columns (CXR-Report-Metric's names for the same numbers)
    "radcliq_bleu_2": "BLEU", "bertscore_cxr": "BertScore", "sembscore": "SembScore",
    "radgraph_combined": "RadGraph", "radcliq_v0": "RadCliQ-v0", "radcliq_v1": "RadCliQ-v1",
    "radcliq_v1_inverse": "1/RadCliQ-v1", "ratescore": "RaTEScore", "crimson": "CRIMSON",
}
LOWER_IS_BETTER: frozenset[str] = frozenset({"radcliq_v0", "radcliq_v1"})
"""Metrics whose best value is the lowest (RadCliQ is a predicted error count)."""
"""Column headers as the paper prints them (``chexpert_f1`` is its "CheXpert" column)."""

STANDARD_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
                                     "gema_score", "chexpert_f1", "green")
"""Default columns of a leaderboard without a published table, in this order when present."""

LOCAL_GROUP = "Local runs"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def format_number(value: float | None, digits: int = DIGITS) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------------------- rendering


@dataclass
class Cell:
    """One table cell: ``text`` as displayed, ``value`` for machine output (CSV) and for
    best-marking, ``bold``, and ``marks`` (significance stars) appended after the number."""

    text: str
    value: float | str | None = None
    bold: bool = False
    marks: str = ""


@dataclass
class Table:
    """A table with optional row groups (the paper's method families).

    ``label_columns`` leading columns are text (left aligned), the rest numbers.
    """

    headers: list[str]
    groups: list[tuple[str | None, list[list[Cell]]]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1
    latex_label: str = ""
    csv_headers: list[str] | None = None  # machine names for CSV (defaults to headers)
    latex_align: str | None = None  # column spec override, e.g. "lccc..."
    star_columns: list[int] | None = None  # columns that get a "<header>_stars" CSV column

    def rows(self) -> list[list[Cell]]:
        return [row for _, rows in self.groups for row in rows]

    def mark_best(self, columns: Sequence[int], lowest: Sequence[int] = ()) -> None:
        """Bold the highest displayed value of each column, the lowest for those in ``lowest``
        (ties: every one of them)."""
        for column in columns:
            shown = []
            for row in self.rows():
                try:
                    shown.append((float(row[column].text), row[column]))
                except ValueError:
                    continue
            if not shown:
                continue
            best = (min if column in lowest else max)(value for value, _ in shown)
            for value, cell in shown:
                cell.bold = value == best

    def render(self, fmt: str) -> str:
        if fmt == "markdown":
            return to_markdown(self)
        if fmt == "latex":
            return to_latex(self)
        if fmt == "csv":
            return to_csv(self)
        raise DataError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_cell(cell: Cell) -> str:
    text = _md_escape(cell.text)
    if cell.bold and cell.text != MISSING:
        text = f"**{text}**"
    if cell.marks:
        text += _md_escape(cell.marks)
    return text


def to_markdown(table: Table) -> str:
    lines: list[str] = []
    if table.caption:
        lines += [table.caption, ""]
    aligns = [":--" if i < table.label_columns else "--:" for i in range(len(table.headers))]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.headers) + " |")
    lines.append("| " + " | ".join(aligns) + " |")
    for group, rows in table.groups:
        if group is not None:
            lines.append("| " + " | ".join([f"*{_md_escape(group)}*"] + [""] * (len(table.headers) - 1)) + " |")
        for row in rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"{note}" for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


TICK_TRUE = "\u2713"
TICK_FALSE = "\u2717"
_LATEX_TICKS = {TICK_TRUE: r"$\checkmark$", TICK_FALSE: r"$\times$", "†": r"$^{\dagger}$", "Δ": r"$\Delta$"}


def _latex_text(text: str) -> str:
    out = latex_escape(text)
    for symbol, latex in _LATEX_TICKS.items():
        out = out.replace(symbol, latex)
    return out


def _latex_cell(cell: Cell) -> str:
    text = _latex_text(cell.text)
    if cell.bold and cell.text != MISSING:
        text = rf"\textbf{{{text}}}"
    if cell.marks:
        text += rf"$^{{{cell.marks}}}$"
    return text


def to_latex(table: Table) -> str:
    """A ``table`` environment with a booktabs ``tabular``. Needs ``\\usepackage{booktabs}``
    (and ``amssymb`` for the ticks of ablation tables)."""
    spec = table.latex_align or "l" * table.label_columns + "c" * (len(table.headers) - table.label_columns)
    width = len(table.headers)
    lines = [r"% requires \usepackage{booktabs} and \usepackage{amssymb}", r"\begin{table}[t]", r"\centering"]
    if width > 8:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines.append(rf"\begin{{tabular}}{{{spec}}}")
    lines.append(r"\toprule")
    lines.append(" & ".join(_latex_text(h) for h in table.headers) + r" \\")
    lines.append(r"\midrule")
    first = True
    for group, rows in table.groups:
        if group is not None:
            if not first:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{width}}}{{c}}{{\textit{{{latex_escape(group)}}}}} \\")
            lines.append(r"\midrule")
        first = False
        for row in rows:
            lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    if width > 8:
        lines.append("}")
    if table.caption or table.notes:
        caption = " ".join([table.caption, *table.notes]).strip()
        lines.append(rf"\caption{{{_latex_text(caption)}}}")
    if table.latex_label:
        lines.append(rf"\label{{{table.latex_label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def latex_document(body: str) -> str:
    """A compilable document around rendered tables (for checking, or a quick PDF)."""
    return "\n".join([r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
                      r"\usepackage{booktabs}", r"\usepackage{amssymb}", r"\usepackage{graphicx}",
                      r"\usepackage[utf8]{inputenc}",
                      r"\begin{document}", body, r"\end{document}", ""])


def to_csv(table: Table) -> str:
    """Flat CSV: a ``group`` column when the table has groups, machine values (full precision
    for computed numbers, empty for missing), stars in their own ``<column>_stars`` column."""
    headers = table.csv_headers or table.headers
    has_groups = any(group is not None for group, _ in table.groups)
    star_columns = table.star_columns if table.star_columns is not None else sorted(
        {i for row in table.rows() for i, c in enumerate(row) if c.marks})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = (["group"] if has_groups else []) + list(headers)
    header += [f"{headers[i]}_stars" for i in star_columns]
    writer.writerow(header)
    for group, rows in table.groups:
        for row in rows:
            values = []
            for cell in row:
                value = cell.value if cell.value is not None else (cell.text if cell.text != MISSING else "")
                if isinstance(value, float):
                    value = "" if not math.isfinite(value) else repr(value)
                values.append(value)
            values += [row[i].marks for i in star_columns]
            writer.writerow(([group or ""] if has_groups else []) + values)
    return out.getvalue()


# ---------------------------------------------------------------------------- published tables


DATASET_ALIASES = {"mimic": "mimic_cxr", "mimic_cxr": "mimic_cxr", "mimic-cxr": "mimic_cxr",
                   "iu_xray": "iu_xray", "iu-xray": "iu_xray", "iu": "iu_xray"}
PUBLISHED_TABLES = {"mimic_cxr": ("mimic_cxr_table1.csv", "Table 1", "MIMIC-CXR"),
                    "iu_xray": ("iu_xray_table2.csv", "Table 2", "IU X-Ray")}
_PUBLISHED_META = ("method", "year", "group", "reproduced", "institution", "rank")
# Public leaderboards other than the paper's tables: (file, caption). ReXrank scores with
# CXR-Report-Metric (BLEU-2, BERTScore, SembScore, RadGraph, RadCliQ), GREEN and RaTEScore; its
# columns carry the project's names for those numbers (benchmarks/published/README.md).
LEADERBOARD_SOURCES = {
    "rexrank": ("rexrank_iu_xray_findings_1602a4c.csv",
                "ReXrank IU X-Ray findings leaderboard (rajpurkarlab/ReXrank @ 1602a4c)"),
    "rexrank-8152f99": ("rexrank_iu_xray_8152f99.csv", "ReXrank IU X-Ray leaderboard (rajpurkarlab/ReXrank @ 8152f99)"),
}


def published_dir() -> Path:
    """benchmarks/published of the source tree; ``BOXMED_PUBLISHED_DIR`` overrides."""
    override = os.environ.get("BOXMED_PUBLISHED_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "benchmarks" / "published"


@dataclass
class PublishedRow:
    method: str
    year: str
    group: str
    reproduced: bool
    values: dict[str, float | None]
    texts: dict[str, str]  # the numbers exactly as transcribed
    institution: str = ""


@dataclass
class PublishedTable:
    metrics: list[str]
    rows: list[PublishedRow]
    source: Path
    caption: str = ""  # a leaderboard's own name; empty for the paper's tables


def load_published(dataset: str, directory: str | os.PathLike[str] | None = None, *,
                   source: str = "paper") -> PublishedTable | None:
    """The paper's comparison table of ``dataset`` (``None`` when the paper has none), or with
    ``source`` one of :data:`LEADERBOARD_SOURCES` (IU X-Ray only)."""
    key = DATASET_ALIASES.get(dataset.lower())
    if source != "paper":
        if source not in LEADERBOARD_SOURCES:
            raise DataError(f"unknown leaderboard source {source!r}",
                            fix=f"use paper or one of {', '.join(LEADERBOARD_SOURCES)}")
        if key != "iu_xray":
            raise DataError(f"the {source} leaderboard is published for IU X-Ray only, not {dataset!r}",
                            fix="pass --dataset iu_xray, or --source paper")
        file_name, caption = LEADERBOARD_SOURCES[source]
    elif key is None:
        return None
    else:
        file_name, caption = PUBLISHED_TABLES[key][0], ""
    path = Path(directory or published_dir()) / file_name
    if not path.exists():
        raise DataError("published results file not found", file=path,
                        fix="run from the source tree or set BOXMED_PUBLISHED_DIR to benchmarks/published")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        metrics = [c for c in reader.fieldnames or [] if c not in _PUBLISHED_META]
        rows = []
        for number, raw in enumerate(reader, start=2):
            values: dict[str, float | None] = {}
            texts: dict[str, str] = {}
            for metric in metrics:
                text = (raw.get(metric) or "").strip()
                texts[metric] = text
                try:
                    values[metric] = float(text) if text else None
                except ValueError:
                    raise DataError(f"{metric!r} is not a number: {text!r}", file=path, record=f"row {number}") from None
            rows.append(PublishedRow(raw["method"], raw.get("year", ""), raw.get("group") or caption,
                                     (raw.get("reproduced") or "").lower() == "yes", values, texts,
                                     raw.get("institution", "")))
    return PublishedTable(metrics, rows, path, caption)


# ---------------------------------------------------------------------------- leaderboard


def _dataset_matches(run: RunData, key: str | None, dataset: str) -> bool:
    if run.dataset is None:
        return True
    return DATASET_ALIASES.get(run.dataset.lower(), run.dataset.lower()) == (key or dataset.lower())


def leaderboard_table(dataset: str, runs: Sequence[RunData] = (), *, published: bool = True,
                      published_directory: str | os.PathLike[str] | None = None,
                      metrics: Sequence[str] | None = None, source: str = "paper") -> Table:
    """Table 1 (MIMIC-CXR) or Table 2 (IU X-Ray): the paper's rows in its groups, then the
    local runs in their own group; best value per column in bold (lowest for RadCliQ). With
    ``source="rexrank"``, the ReXrank leaderboard's rows instead of the paper's."""
    key = DATASET_ALIASES.get(dataset.lower())
    table_data = load_published(dataset, published_directory, source=source) if published else None
    if metrics is None:
        if table_data is not None:
            metrics = table_data.metrics
        else:
            present = {m for run in runs for m in run.summary}
            metrics = [m for m in STANDARD_METRICS if m in present] or sorted(present)
    metrics = list(metrics)
    headers = ["Method", "Year"] + [metric_label(m) for m in metrics]
    groups: list[tuple[str | None, list[list[Cell]]]] = []
    notes: list[str] = []
    if table_data is not None:
        for row in table_data.rows:
            name = row.method + (" †" if row.reproduced else "") + (f" ({row.institution})" if row.institution else "")
            cells = [Cell(name, row.method), Cell(row.year or MISSING, row.year)]
            for metric in metrics:
                text = row.texts.get(metric, "")
                # The transcribed text is shown as is: the published numbers are reproduced exactly.
                cells.append(Cell(text or MISSING, text))
            if groups and groups[-1][0] == row.group:
                groups[-1][1].append(cells)
            else:
                groups.append((row.group, [cells]))
        if any(row.reproduced for row in table_data.rows):
            notes.append("† reproduced by the BoxMed-RL authors.")
    local_rows = []
    for run in runs:
        cells = [Cell(run.name, run.name), Cell(MISSING, "")]
        for metric in metrics:
            value = run.summary.get(metric)
            cells.append(Cell(format_number(value), value))
        local_rows.append(cells)
        if not _dataset_matches(run, key, dataset):
            notes.append(f"{run.name}: scored on dataset {run.dataset!r}, not {dataset!r} (not comparable).")
        convention = run.conventions.get("chexpert_convention") or run.conventions.get("ce_convention")
        if convention and "chexpert_f1" in metrics:
            notes.append(f"{run.name}: CheXpert = {convention}.")
    if local_rows:
        groups.append((LOCAL_GROUP if table_data is not None else None, local_rows))
    if table_data is not None and table_data.caption:
        caption = f"{table_data.caption} with local runs; best per column in bold (lowest RadCliQ)."
        notes.append("ReXrank's numbers come from CXR-Report-Metric (BLEU = its BLEU-2, RadGraph = radgraph_combined), "
                     "GREEN and RaTEScore; score local runs with --metrics radcliq,bertscore,sembscore,radgraph,"
                     "ratescore,green to fill these columns. A '-' in a local row: the metric was not computed.")
    elif table_data is not None:
        label, name = PUBLISHED_TABLES[key][1], PUBLISHED_TABLES[key][2]  # type: ignore[index]
        caption = f"{label} of the BoxMed-RL paper ({name}) with local runs; best per column in bold."
    else:
        caption = f"Local runs on {dataset}; best per column in bold."
    table = Table(headers, groups, caption=caption, notes=notes, label_columns=2,
                  latex_label=f"tab:leaderboard-{key or dataset}", csv_headers=["method", "year", *metrics])
    table.mark_best(range(2, len(headers)), lowest=[2 + i for i, m in enumerate(metrics) if m in LOWER_IS_BETTER])
    return table


# ---------------------------------------------------------------------------- Table 3


def per_class_table(run: RunData, *, digits: int = DIGITS) -> Table:
    """Table 3: per-class accuracy, precision, recall, F1 (and support when present), in the
    paper's row order (No Finding first, then CheXbert head order)."""
    frame = run.require_per_class()
    order = ["No Finding", *[c for c in CHEXPERT_CLASSES if c != "No Finding"]]
    order += [c for c in frame.index if c not in order]
    columns = ["accuracy", "precision", "recall", "f1"]
    with_support = "support" in frame.columns
    headers = ["Category", "Accuracy", "Precision", "Recall", "F1-Score"] + (["Support"] if with_support else [])
    rows = []
    for category in order:
        if category not in frame.index:
            continue
        record = frame.loc[category]
        cells = [Cell(str(category), str(category))]
        cells += [Cell(format_number(float(record[c]), digits), float(record[c])) for c in columns]
        if with_support:
            support = record["support"]
            cells.append(Cell(MISSING if not math.isfinite(support) else str(int(support)), float(support)))
        rows.append(cells)
    convention = run.conventions.get("chexpert_convention") or run.conventions.get("labeler")
    caption = f"Classification metrics across the CheXpert categories ({run.name})."
    notes = [f"Conventions: {convention}."] if convention else []
    return Table(headers, [(None, rows)], caption=caption, notes=notes, latex_label="tab:per-class",
                 csv_headers=["category", *columns] + (["support"] if with_support else []))


# ---------------------------------------------------------------------------- comparisons


def comparison_table(comparison: Any, *, digits: int = DIGITS) -> Table:
    """``compare`` output: one row per metric; BASE's value, then for each OTHER its value
    with stars, the delta and the p-value (Holm-adjusted when a correction was asked)."""
    from boxmed_eval.stats import RunComparison  # local: stats imports tables' neighbours

    assert isinstance(comparison, RunComparison)
    others = comparison.others
    headers = ["Metric", comparison.base]
    csv_headers = ["metric", comparison.base]
    bootstrap = comparison.test == "bootstrap"
    for other in others:
        if bootstrap:
            headers += [other, "Δ", "95% CI of Δ"]
            csv_headers += [other, f"delta_{other}", f"ci_{other}"]
        else:
            headers += [other, "Δ", "p (adj.)" if comparison.correction != "none" else "p"]
            csv_headers += [other, f"delta_{other}", f"p_{other}"]
    rows = []
    for metric in comparison.metrics:
        base_value = comparison.values[comparison.base].get(metric)
        cells = [Cell(metric_label(metric), metric), Cell(format_number(base_value, digits), base_value)]
        for other in others:
            entry = comparison.entries.get((other, metric))
            value = comparison.values[other].get(metric)
            delta = (value - base_value) if value is not None and base_value is not None else None
            cells.append(Cell(format_number(value, digits), value, marks=entry.stars if entry else ""))
            cells.append(Cell(_signed(delta, digits), delta))
            if bootstrap:
                ci = entry.bootstrap.delta_ci if entry and entry.bootstrap else None
                text = f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else MISSING
                cells.append(Cell(text, f"{ci[0]!r};{ci[1]!r}" if ci else ""))
            else:
                p = entry.p_reported if entry else None
                cells.append(Cell(_format_p(p), p))
        rows.append(cells)
    star_columns = [] if bootstrap else [2 + 3 * k for k in range(len(others))]
    return Table(headers, [(None, rows)], caption=comparison.caption(), notes=comparison.notes,
                 csv_headers=csv_headers, star_columns=star_columns)


def _signed(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:+.{digits}f}"


def _format_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return MISSING
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.4f}"


# ---------------------------------------------------------------------------- ablations


_SPEC_KEYS = frozenset({"title", "metrics", "runs_root", "alternative", "zero_method", "correction", "show_label",
                        "label_header", "ticks", "row"})
_ROW_KEYS = frozenset({"label", "run", "full", "ticks"})


@dataclass
class AblationRow:
    label: str
    run: Path
    ticks: dict[str, bool]
    full: bool = False


@dataclass
class AblationSpec:
    """An ablation table, read from TOML::

        title = "Table 4: ..."
        metrics = ["bleu_1", "bleu_4", "meteor"]
        runs_root = "../../runs"        # relative run paths start here (relative to this file)
        alternative = "less"            # ablated lower than the full model (the paper)
        zero_method = "wilcox"
        correction = "none"             # or "holm" (across metrics, per row)
        show_label = true               # first column "Configuration"
        label_header = "Configuration"

        [ticks]                         # tick columns, in order: key = header
        mcl = "MCL"
        svr = "SVR"

        [[row]]
        label = "w/o MCL"
        run = "boxmedrl_wo_mcl"
        ticks = { mcl = false, svr = true }

        [[row]]
        label = "BoxMed-RL"
        run = "boxmedrl_full"
        full = true                     # the reference every other row is tested against
        ticks = { mcl = true, svr = true }
    """

    path: Path
    title: str
    metrics: list[str]
    ticks: dict[str, str]
    rows: list[AblationRow]
    alternative: str = "less"
    zero_method: str = "wilcox"
    correction: str = "none"
    show_label: bool = True
    label_header: str = "Configuration"

    @property
    def full_row(self) -> AblationRow:
        return next(row for row in self.rows if row.full)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], *, runs_root: str | os.PathLike[str] | None = None) -> "AblationSpec":
        from boxmed_eval.stats import ALTERNATIVES, CORRECTIONS, ZERO_METHODS

        path = Path(path)
        if not path.exists():
            raise DataError("ablation spec not found", file=path, fix="check the path (e.g. benchmarks/ablations/table4.toml)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"malformed TOML ({exc})", file=path) from None
        unknown_keys = sorted(set(data) - _SPEC_KEYS)
        if unknown_keys:
            raise DataError(f"unknown top-level keys: {', '.join(unknown_keys)}", file=path,
                            fix=f"valid keys: {', '.join(sorted(_SPEC_KEYS))}")
        metrics = data.get("metrics")
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise DataError("'metrics' must be a non-empty list of metric names", file=path,
                            fix='e.g. metrics = ["bleu_1", "bleu_4", "meteor", "rouge_l", "chexpert_f1"]')
        ticks = data.get("ticks", {})
        if not isinstance(ticks, dict) or not all(isinstance(v, str) for v in ticks.values()):
            raise DataError("'[ticks]' must map tick keys to column headers", file=path, fix='e.g. [ticks] mcl = "MCL"')
        base = Path(runs_root) if runs_root is not None else (path.parent / data.get("runs_root", "."))
        raw_rows = data.get("row")
        if not isinstance(raw_rows, list) or len(raw_rows) < 2:
            raise DataError("needs at least two [[row]] tables (the full model and one ablation)", file=path)
        rows = []
        for index, raw in enumerate(raw_rows, start=1):
            where = f"[[row]] {index}"
            if not isinstance(raw, dict) or "run" not in raw:
                raise DataError("missing 'run' (the run directory)", file=path, record=where)
            extra = sorted(set(raw) - _ROW_KEYS)
            if extra:
                # A key written after a [[row]] header belongs to that row: say so.
                raise DataError(f"unknown keys in [[row]]: {', '.join(extra)}", file=path, record=where,
                                fix=f"a row takes {', '.join(sorted(_ROW_KEYS))}; table-wide settings go above the "
                                    "first [ticks] / [[row]] header")
            row_ticks = raw.get("ticks", {})
            unknown = sorted(set(row_ticks) - set(ticks))
            missing = sorted(set(ticks) - set(row_ticks))
            if unknown or missing:
                raise DataError(f"ticks do not match [ticks] (unknown: {unknown or 'none'}, missing: {missing or 'none'})",
                                file=path, record=where)
            if not all(isinstance(v, bool) for v in row_ticks.values()):
                raise DataError("tick values must be true or false", file=path, record=where)
            run_path = Path(raw["run"]).expanduser()
            if not run_path.is_absolute():
                run_path = Path(os.path.normpath(base / run_path))
            rows.append(AblationRow(str(raw.get("label", raw["run"])), run_path, dict(row_ticks), bool(raw.get("full", False))))
        n_full = sum(row.full for row in rows)
        if n_full != 1:
            raise DataError(f"exactly one row must have full = true (found {n_full})", file=path,
                            fix="mark the complete model, the reference of the significance tests")
        spec = cls(path=path, title=str(data.get("title", path.stem)), metrics=list(metrics), ticks=dict(ticks),
                   rows=rows, alternative=str(data.get("alternative", "less")),
                   zero_method=str(data.get("zero_method", "wilcox")), correction=str(data.get("correction", "none")),
                   show_label=bool(data.get("show_label", True)),
                   label_header=str(data.get("label_header", "Configuration")))
        for name, value, valid in (("alternative", spec.alternative, ALTERNATIVES),
                                   ("zero_method", spec.zero_method, ZERO_METHODS),
                                   ("correction", spec.correction, CORRECTIONS)):
            if value not in valid:
                raise DataError(f"unknown {name} {value!r}", file=path, fix=f"use one of {', '.join(valid)}")
        return spec


def ablation_table(spec: AblationSpec, *, digits: int = DIGITS) -> Table:
    """Tables 4 / 5: one row per configuration, tick columns, metric values; every non-full
    row gets stars from the one-tailed Wilcoxon signed-rank test against the full model."""
    from boxmed_eval.stats import compare_runs

    missing = [row for row in spec.rows if not row.run.is_dir()]
    if missing:
        listing = "; ".join(f"{row.label}: {row.run}" for row in missing)
        raise DataError(f"{len(missing)} run directories of the spec do not exist ({listing})", file=spec.path,
                        fix="produce them with `boxmed-eval run ... --out DIR`, or point 'run' / runs_root "
                            "(or --runs-root) at them")
    runs = {row.label: load_run(row.run, require_scores=True) for row in spec.rows}
    full = spec.full_row
    others = [row for row in spec.rows if not row.full]
    comparison = compare_runs(runs[full.label], [runs[row.label] for row in others], metrics=spec.metrics,
                              alternative=spec.alternative, zero_method=spec.zero_method,
                              correction=spec.correction, names=[full.label] + [row.label for row in others])
    headers = ([spec.label_header] if spec.show_label else []) + list(spec.ticks.values())
    headers += [metric_label(m) for m in spec.metrics]
    rows = []
    for row in spec.rows:
        cells = [Cell(row.label, row.label)] if spec.show_label else []
        cells += [Cell(TICK_TRUE if row.ticks[k] else TICK_FALSE, "yes" if row.ticks[k] else "no") for k in spec.ticks]
        for metric in spec.metrics:
            value = comparison.values[row.label].get(metric)
            entry = None if row.full else comparison.entries.get((row.label, metric))
            cells.append(Cell(format_number(value, digits), value, marks=entry.stars if entry else ""))
        rows.append(cells)
    notes = list(comparison.notes)
    direction = {"less": "significantly lower than", "greater": "significantly higher than",
                 "two-sided": "significantly different from"}[spec.alternative]
    tail = "two-sided" if spec.alternative == "two-sided" else "one-tailed"
    caption = (f"{spec.title}. A {tail} Wilcoxon signed-rank test of each configuration against "
               f"{full.label} (is it {direction} {full.label}?): * p < 0.05, ** p < 0.01"
               + (" (Holm-adjusted across metrics)" if spec.correction == "holm" else "") + ".")
    label_columns = (1 if spec.show_label else 0) + len(spec.ticks)
    csv_headers = (["configuration"] if spec.show_label else []) + list(spec.ticks) + list(spec.metrics)
    align = ("l" if spec.show_label else "") + "c" * (len(headers) - (1 if spec.show_label else 0))
    return Table(headers, [(None, rows)], caption=caption, notes=notes, label_columns=label_columns,
                 latex_label=f"tab:{spec.path.stem}", csv_headers=csv_headers, latex_align=align,
                 star_columns=list(range(label_columns, len(headers))))
