"""Figures of the paper from runs (matplotlib, Agg backend; each figure saved as PNG and PDF).

Figure 5 (ablations):
  - :func:`plot_class_f1_bars`: per-run bars of the 14 CheXpert class F1 (per_class.csv);
  - :func:`plot_green_criteria_bars` and :func:`plot_green_radar`: GREEN's seven criteria, the
    mean per study of the six clinically significant error counts and of the matched findings,
    when scores.csv holds them (columns in :data:`GREEN_CRITERIA`);
  - :func:`plot_metric_radar`: a radar chart of the corpus metrics of each run.
Figure 6 (cases): :func:`plot_case`: the image with ground-truth boxes (green) and predicted
boxes (red), the reference and generated reports side by side, and the reasoning when present.
Grounded cases: :func:`plot_grounded_case`: reference (green) and predicted (red) boxes numbered
by their sentences, each sentence with its RadFact verdicts and laterality / anatomy errors.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from boxmed_eval.errors import DataError  # noqa: E402
from boxmed_eval.records import CHEXPERT_CLASSES, Box, Prediction, Study  # noqa: E402
from boxmed_eval.rundata import GREEN_CRITERIA, RunData  # noqa: E402

RADAR_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
                                  "chexpert_f1", "green", "gema_score")

_TAG_RE = re.compile(r"</?(think|answer)>")

GT_COLOR = "#1a9641"  # green: ground truth
PRED_COLOR = "#d7191c"  # red: prediction


def save_figure(figure: Figure, stem: str | os.PathLike[str]) -> list[Path]:
    """Save ``stem.png`` (150 dpi) and ``stem.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    plt.close(figure)
    return paths


def _run_colors(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


# ---------------------------------------------------------------------------- Figure 5


def class_f1_matrix(runs: Sequence[RunData]) -> tuple[list[str], np.ndarray]:
    """(classes, F1 array of shape runs x classes) from each run's per_class.csv."""
    classes = list(CHEXPERT_CLASSES)
    values = np.full((len(runs), len(classes)), np.nan)
    for r, run in enumerate(runs):
        frame = run.require_per_class()
        for c, name in enumerate(classes):
            if name in frame.index:
                values[r, c] = float(frame.loc[name, "f1"])
    return classes, values


def plot_class_f1_bars(runs: Sequence[RunData], stem: str | os.PathLike[str]) -> list[Path]:
    """Grouped bars: the F1 of each of the 14 CheXpert classes, one bar per run."""
    classes, values = class_f1_matrix(runs)
    n_runs = len(runs)
    width = 0.8 / n_runs
    x = np.arange(len(classes))
    figure, axes = plt.subplots(figsize=(max(10, 0.9 * len(classes) + 1.5 * n_runs), 4.8))
    for r, (run, color) in enumerate(zip(runs, _run_colors(n_runs))):
        axes.bar(x + (r - (n_runs - 1) / 2) * width, np.nan_to_num(values[r]), width, label=run.name, color=color)
    axes.set_xticks(x, classes, rotation=40, ha="right")
    axes.set_ylabel("F1")
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    axes.set_ylim(0, min(1.0, top * 1.15 + 0.02) if top > 0 else 1.0)
    axes.set_title("CheXpert per-class F1")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncols=min(n_runs, 4), loc="upper left")
    return save_figure(figure, stem)


def green_criteria_column(run: RunData, aliases: Sequence[str]) -> str | None:
    if run.scores is None:
        return None
    return next((c for c in aliases if c in run.scores.columns), None)


def green_criteria_means(runs: Sequence[RunData]) -> np.ndarray | None:
    """Mean per study of GREEN's seven criteria (runs x 7), or None when no run has them.
    A run that has them only in part raises a DataError naming the missing columns."""
    have = [any(green_criteria_column(run, aliases) for _, _, aliases in GREEN_CRITERIA) for run in runs]
    if not any(have):
        return None
    means = np.full((len(runs), len(GREEN_CRITERIA)), np.nan)
    for r, run in enumerate(runs):
        if not have[r]:
            continue
        missing = []
        for c, (_, _, aliases) in enumerate(GREEN_CRITERIA):
            column = green_criteria_column(run, aliases)
            if column is None:
                missing.append(aliases[0])
            else:
                means[r, c] = float(run.scores[column].mean())  # type: ignore[index]
        if missing:
            raise DataError(f"GREEN criteria columns missing: {', '.join(missing)}", file=run.path / "scores.csv",
                            fix="re-score with the GREEN metric, which writes all seven criteria")
    return means


def plot_green_criteria_bars(runs: Sequence[RunData], stem: str | os.PathLike[str]) -> list[Path] | None:
    means = green_criteria_means(runs)
    if means is None:
        return None
    n_runs = len(runs)
    width = 0.8 / n_runs
    x = np.arange(len(GREEN_CRITERIA))
    figure, axes = plt.subplots(figsize=(11, 4.5))
    for r, (run, color) in enumerate(zip(runs, _run_colors(n_runs))):
        axes.bar(x + (r - (n_runs - 1) / 2) * width, np.nan_to_num(means[r]), width, label=run.name, color=color)
    axes.set_xticks(x, [label for _, label, _ in GREEN_CRITERIA], rotation=25, ha="right")
    axes.set_ylabel("mean count per study")
    axes.set_title("GREEN criteria (errors (a)-(f): lower is better; matched findings: higher is better)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, stem)


def _radar(axes, labels: Sequence[str], series: Sequence[tuple[str, np.ndarray]], colors: Sequence) -> None:
    angles = np.linspace(0, 2 * np.pi, len(labels), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    for (name, values), color in zip(series, colors):
        data = np.nan_to_num(values)
        data = np.concatenate([data, data[:1]])
        axes.plot(closed, data, color=color, linewidth=1.8, label=name)
        axes.fill(closed, data, color=color, alpha=0.12)
    axes.set_xticks(angles, labels, fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.set_rlabel_position(90)


def plot_green_radar(runs: Sequence[RunData], stem: str | os.PathLike[str]) -> list[Path] | None:
    means = green_criteria_means(runs)
    if means is None:
        return None
    figure = plt.figure(figsize=(7, 6.5))
    axes = figure.add_subplot(projection="polar")
    labels = ["\n".join(textwrap.wrap(label, 18)) for _, label, _ in GREEN_CRITERIA]
    _radar(axes, labels, [(run.name, means[r]) for r, run in enumerate(runs)], _run_colors(len(runs)))
    axes.set_title("GREEN criteria (mean per study)", pad=24)
    axes.legend(loc="upper right", bbox_to_anchor=(1.35, 1.12), fontsize=8)
    return save_figure(figure, stem)


def plot_metric_radar(runs: Sequence[RunData], stem: str | os.PathLike[str],
                      metrics: Sequence[str] | None = None) -> list[Path]:
    """Radar of corpus metrics (summary.json) shared by all runs; raw values, one axis each."""
    from boxmed_eval.tables import metric_label

    if metrics is None:
        metrics = [m for m in RADAR_METRICS if all(math.isfinite(run.summary.get(m, math.nan)) for run in runs)]
    if len(metrics) < 3:
        raise DataError(f"a radar chart needs at least 3 metrics shared by all runs (found {list(metrics)})",
                        fix="score the runs with more metrics, or pass --metrics")
    values = [np.array([run.summary.get(m, math.nan) for m in metrics]) for run in runs]
    figure = plt.figure(figsize=(7, 6.5))
    axes = figure.add_subplot(projection="polar")
    _radar(axes, [metric_label(m) for m in metrics], [(run.name, v) for run, v in zip(runs, values)],
           _run_colors(len(runs)))
    axes.set_title("Corpus metrics", pad=24)
    axes.legend(loc="upper right", bbox_to_anchor=(1.35, 1.12), fontsize=8)
    return save_figure(figure, stem)


def figure5(runs: Sequence[RunData], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every Figure 5 panel the runs have data for; returns the files written."""
    out = Path(out_dir)
    written: list[Path] = []
    if all(run.per_class is not None for run in runs):
        written += plot_class_f1_bars(runs, out / "figure5_chexpert_class_f1")
    else:
        without = [run.name for run in runs if run.per_class is None]
        if len(without) < len(runs):
            raise DataError(f"per_class.csv missing in {', '.join(without)}", fix="score every run with the CheXpert metric")
    for plot, name in ((plot_green_criteria_bars, "figure5_green_criteria"), (plot_green_radar, "figure5_green_radar")):
        paths = plot(runs, out / name)
        if paths:
            written += paths
    written += plot_metric_radar(runs, out / "figure5_metric_radar")
    return written


# ---------------------------------------------------------------------------- Figure 6


def _scaled(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """Box corners in the pixels of the image as loaded (boxes record the size they refer to)."""
    sx = width / box.image_width if box.image_width else 1.0
    sy = height / box.image_height if box.image_height else 1.0
    return box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy


def _draw_boxes(axes, boxes: Sequence[Box], width: int, height: int, color: str, linestyle: str,
                label_at_bottom: bool = False) -> None:
    for box in boxes:
        x1, y1, x2, y2 = _scaled(box, width, height)
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2,
                                 linestyle=linestyle))
        label = box.category or box.region
        if label:
            # Ground truth labelled at the top-left corner, predictions at the bottom-left, so
            # that a predicted box on its ground truth does not hide the other's label.
            y, va = (min(y2, height) - 2, "bottom") if label_at_bottom else (max(y1, 0) + 2, "top")
            axes.text(max(x1, 0) + 2, y, label, color="white", fontsize=6, va=va,
                      bbox={"facecolor": color, "alpha": 0.75, "pad": 1, "edgecolor": "none"})
    # Boxes partly outside the image must not widen the axes beyond it.
    axes.set_xlim(-0.5, width - 0.5)
    axes.set_ylim(height - 0.5, -0.5)


def _wrap(text: str, width: int) -> str:
    paragraphs = [p for p in (text or "").split("\n")]
    return "\n".join(textwrap.fill(p, width) if p.strip() else "" for p in paragraphs)


def _study_pixels(study: Study, image_index: int) -> np.ndarray:
    """The study's ``image_index``-th image as grey levels; a clear error when it is missing."""
    from PIL import Image

    if not study.image_paths:
        raise DataError("the study has no image", record=study.id)
    if image_index >= len(study.image_paths):
        raise DataError(f"image index {image_index} out of range ({len(study.image_paths)} images)", record=study.id)
    path = Path(study.image_paths[image_index])
    if not path.is_file():
        raise DataError("image file not found", file=path, record=study.id,
                        fix="pass --data-root pointing at the dataset's images")
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def plot_case(study: Study, prediction: Prediction, stem: str | os.PathLike[str], *, image_index: int = 0,
              title: str | None = None, max_chars: int = 1500) -> list[Path]:
    """A Figure 6 row: image with ground-truth (green, solid) and predicted (red, dashed)
    boxes | reference report | generated report | reasoning and detected regions (when the
    prediction has reasoning)."""
    pixels = _study_pixels(study, image_index)
    height, width = pixels.shape
    has_reasoning = bool(prediction.reasoning and prediction.reasoning.strip())
    panels: list[tuple[str, str, str]] = [("Reference report", study.findings, GT_COLOR),
                                          ("Generated report", prediction.report, PRED_COLOR)]
    if has_reasoning:
        regions = [f"- {b.phrase or b.category or 'box'}" + (f" [{b.region}]" if b.region else "") for b in prediction.boxes]
        # The <think>/<answer> tags of the model's output format are markup, not reasoning.
        body = _TAG_RE.sub("", prediction.reasoning or "").strip()
        if regions:
            body += "\n\nDetected regions:\n" + "\n".join(regions)
        panels.append(("Reasoning", body, "#333333"))
    ratios = [1.25] + [1.0] * len(panels)
    figure, axes = plt.subplots(1, len(ratios), figsize=(3.1 * sum(ratios), 4.6),
                                gridspec_kw={"width_ratios": ratios})
    image_axes = axes[0]
    image_axes.imshow(pixels, cmap="gray")
    gt = [b for b in study.boxes if b.image_index == image_index]
    pred = [b for b in prediction.boxes if b.image_index == image_index]
    _draw_boxes(image_axes, gt, width, height, GT_COLOR, "-")
    _draw_boxes(image_axes, pred, width, height, PRED_COLOR, "--", label_at_bottom=True)
    image_axes.set_axis_off()
    image_axes.set_title(f"{study.id}\nground truth ({len(gt)}): green, predicted ({len(pred)}): red", fontsize=9)
    for ax, (heading, body, color) in zip(axes[1:], panels):
        ax.set_axis_off()
        ax.set_title(heading, fontsize=10, fontweight="bold", color=color, loc="left")
        body = body if len(body) <= max_chars else body[:max_chars].rstrip() + " [...]"
        ax.text(0.0, 1.0, _wrap(body, 40), fontsize=8, va="top", ha="left", transform=ax.transAxes, wrap=False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return save_figure(figure, stem)


# ---------------------------------------------------------------------------- grounded cases

def _sentence_lines(tag: str, sentences: Sequence, verdicts: Sequence, statuses: Sequence[str],
                    flags: dict[int, list[str]]) -> list[str]:
    lines = []
    for index, (sentence, verdict, status) in enumerate(zip(sentences, verdicts, statuses), start=1):
        marks = ["entailed" if verdict.entailed else "not entailed"]
        if verdict.failed:
            marks = ["judge failed"]
        if status == "spatial_entailment":
            marks.append("boxes entailed")
        elif status == "no_spatial_entailment":
            marks.append("boxes not entailed")
        marks += flags.get(index - 1, [])
        box_note = f" [{len(sentence.boxes)} box{'es' if len(sentence.boxes) != 1 else ''}]" if sentence.boxes else ""
        lines.append(f"{tag}{index}{box_note} {sentence.text}\n   -> {', '.join(marks)}")
    return lines


def plot_grounded_case(study: Study, prediction: Prediction, stem: str | os.PathLike[str], *, image_index: int = 0,
                       title: str | None = None, mask_size: int = 224, threshold: float = 0.5) -> list[Path]:
    """A grounded-report case: the image with the reference boxes (green, solid, ``R<n>``) and
    the predicted boxes (red, dashed, ``P<n>``), numbered by the sentence they ground, and each
    report's sentences with their RadFact verdicts (rules judge: entailed or not, boxes
    spatially entailed or not) and, for predicted boxes, laterality and anatomy errors."""
    from boxmed_eval.metrics.consistency import check_box
    from boxmed_eval.metrics.radfact import RadFactMetric, study_image_size

    pixels = _study_pixels(study, image_index)
    height, width = pixels.shape
    metric = RadFactMetric(mask_size=mask_size, threshold=threshold)
    judged = metric.judge_studies({study.id: study.findings}, {study.id: prediction.report},
                                  studies={study.id: study}, predictions={study.id: prediction})[study.id]
    size = study_image_size(study)
    flags: dict[int, list[str]] = {}
    for index, sentence in enumerate(judged.candidate):
        for box in sentence.source_boxes:
            check = check_box(box, size)
            if check is not None and check.laterality_error:
                flags.setdefault(index, []).append("LATERALITY ERROR")
            if check is not None and check.anatomy_error:
                flags.setdefault(index, []).append(f"box outside {' / '.join(check.regions)}")
    figure, axes = plt.subplots(1, 3, figsize=(13.5, 5.2), gridspec_kw={"width_ratios": [1.25, 1.0, 1.0]})
    image_axes = axes[0]
    image_axes.imshow(pixels, cmap="gray")
    for tag, sentences, color, style, bottom in (("R", judged.reference, GT_COLOR, "-", False),
                                                 ("P", judged.candidate, PRED_COLOR, "--", True)):
        for number, sentence in enumerate(sentences, start=1):
            boxes = [b for b in sentence.source_boxes if b.image_index == image_index]
            for box in boxes:
                x1, y1, x2, y2 = _scaled(box, width, height)
                image_axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=2,
                                               linestyle=style))
                y, va = (min(y2, height) - 2, "bottom") if bottom else (max(y1, 0) + 2, "top")
                image_axes.text(max(x1, 0) + 2, y, f"{tag}{number}", color="white", fontsize=7, va=va,
                                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    image_axes.set_xlim(-0.5, width - 0.5)
    image_axes.set_ylim(height - 0.5, -0.5)
    image_axes.set_axis_off()
    image_axes.set_title(f"{study.id}\nreference: green R<n>, predicted: red P<n>\n"
                         "(patient's left on the image's right)", fontsize=9)
    panels = (("Reference sentences", _sentence_lines("R", judged.reference, judged.reference_verdicts,
                                                      judged.reference_status, {}), GT_COLOR),
              ("Generated sentences", _sentence_lines("P", judged.candidate, judged.candidate_verdicts,
                                                      judged.candidate_status, flags), PRED_COLOR))
    for ax, (heading, lines, color) in zip(axes[1:], panels):
        ax.set_axis_off()
        ax.set_title(heading, fontsize=10, fontweight="bold", color=color, loc="left")
        body = "\n".join(_wrap(line, 46) for line in lines) or "(no sentence)"
        ax.text(0.0, 1.0, body, fontsize=7.5, va="top", ha="left", transform=ax.transAxes)
    p, r = judged.precision_side, judged.recall_side
    summary = (f"logical P/R {p.entailed_fraction:.2f}/{r.entailed_fraction:.2f}  grounding P/R "
               f"{p.grounding_fraction:.2f}/{r.grounding_fraction:.2f}  spatial P/R "
               f"{p.spatial_fraction:.2f}/{r.spatial_fraction:.2f} (rules judge)") if p and r else ""
    figure.suptitle(" — ".join(t for t in (title, summary) if t), fontsize=10)
    figure.tight_layout()
    return save_figure(figure, stem)
