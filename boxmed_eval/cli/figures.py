"""``boxmed-eval figures figure5|figure6`` and ``boxmed-eval table3``: the paper's Figures 5–6
and Table 3 from runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.cli.compare import emit
from boxmed_eval.errors import DataError
from boxmed_eval.records import Study, read_studies
from boxmed_eval.rundata import RunData, load_run
from boxmed_eval.tables import FORMATS, latex_document, per_class_table


@main.group("figures")
def figures() -> None:
    """The paper's figures from runs (PNG and PDF): figure5 (ablation bars and radar
    charts), figure6 (case figures with boxes), cases (grounded-report case views with each
    sentence's RadFact verdicts). Table 3 is the `table3` command."""


@figures.command("figure5")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("figures"),
              show_default=True)
def figure5(runs: tuple[Path, ...], out_dir: Path) -> None:
    """Figure 5 for RUNS: per-run bars of the 14 CheXpert class F1 (per_class.csv), GREEN's
    seven criteria as bars and a radar (when scores.csv has the columns green_a .. green_f,
    the per-study counts of the six clinically significant error categories, and
    green_matched, the matched findings), and a radar of the corpus metrics."""
    from boxmed_eval.plots import figure5 as draw

    loaded = [load_run(path) for path in runs]
    for path in draw(loaded, out_dir):
        click.echo(str(path))


def _load_studies(run: RunData, studies_file: Path | None, data_root: Path | None) -> dict[str, Study]:
    if studies_file is not None:
        return read_studies(studies_file)
    from boxmed_eval.datasets.base import get_dataset

    dataset = run.info.get("dataset")
    if not dataset:
        raise DataError("run.json names no dataset", file=run.path / "run.json",
                        fix="pass --studies FILE (JSONL of study records with image paths and boxes)")
    root = data_root or run.info.get("data_root")
    adapter = get_dataset(str(dataset), root, check_images=False, **(run.info.get("dataset_options") or {}))
    return {study.id: study for study in adapter.load(str(run.info.get("split", "test")))}


def _choose(run: Path, ids: str | None, count: int, predictions: dict, studies: dict) -> list[str]:
    """The ids asked for, else the first ``count`` studies, those with boxes first."""
    if ids:
        chosen = [i.strip() for i in ids.split(",") if i.strip()]
        unknown = [i for i in chosen if i not in predictions or i not in studies]
        if unknown:
            raise DataError(f"no prediction or study for ids {', '.join(unknown)}", file=run,
                            fix="pick ids that the run predicted (see predictions.jsonl)")
        return chosen
    candidates = [i for i in predictions if i in studies]
    ranked = sorted(candidates, key=lambda i: (not studies[i].boxes, not predictions[i].boxes))
    if not ranked:
        raise DataError("no predicted study is in the dataset split", file=run)
    return ranked[:count]


def _case_options(command: Callable) -> Callable:
    """The options figure6 and cases share: where the studies and images come from, which image,
    where the files go."""
    for option in reversed([
        click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Where the dataset's images are (default: run.json's data_root)."),
        click.option("--studies", "studies_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="JSONL of study records (id, image_paths, findings, boxes) instead of "
                                        "loading run.json's dataset."),
        click.option("--image-index", type=int, default=0, show_default=True, help="Which image of a study to draw."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("figures"),
                     show_default=True),
    ]):
        command = option(command)
    return command


def _safe_name(study_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in study_id)


@figures.command("figure6")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--ids", default=None, help="Comma list of study ids (default: the first --n studies that have "
                                          "ground-truth boxes, preferring those with predicted boxes).")
@click.option("--n", "count", type=int, default=2, show_default=True)
@_case_options
def figure6(run: Path, ids: str | None, count: int, data_root: Path | None, studies_file: Path | None,
            image_index: int, out_dir: Path) -> None:
    """Figure 6 case figures for RUN: the image with ground-truth boxes (green, solid) and
    predicted boxes (red, dashed), the reference and generated reports side by side, and the
    model's reasoning and detected regions when the prediction has them. One file pair
    (figure6_<id>.png/.pdf) per study."""
    from boxmed_eval.plots import plot_case

    loaded = load_run(run)
    predictions = loaded.predictions()
    studies = _load_studies(loaded, studies_file, data_root)
    chosen = _choose(run, ids, count, predictions, studies)
    for study_id in chosen:
        for path in plot_case(studies[study_id], predictions[study_id], out_dir / f"figure6_{_safe_name(study_id)}",
                              image_index=image_index, title=f"{loaded.name}: study {study_id}"):
            click.echo(str(path))


@figures.command("cases")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--ids", default=None, help="Comma list of study ids (default: the first --n studies, those with "
                                          "boxes first).")
@click.option("--n", "count", type=int, default=4, show_default=True)
@_case_options
def cases(run: Path, ids: str | None, count: int, data_root: Path | None, studies_file: Path | None,
          image_index: int, out_dir: Path) -> None:
    """Grounded-report case views of RUN: the image with reference boxes (green, R<n>) and
    predicted boxes (red, P<n>) numbered by the sentence they ground, and every sentence with
    its RadFact verdicts (rules judge) and the laterality / anatomy errors of its boxes. One
    file pair (case_<id>.png/.pdf) per study."""
    from boxmed_eval.plots import plot_grounded_case

    loaded = load_run(run)
    predictions = loaded.predictions()
    studies = _load_studies(loaded, studies_file, data_root)
    for study_id in _choose(run, ids, count, predictions, studies):
        for path in plot_grounded_case(studies[study_id], predictions[study_id], out_dir / f"case_{_safe_name(study_id)}",
                                       image_index=image_index, title=f"{loaded.name}: study {study_id}"):
            click.echo(str(path))


@main.command("table3")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--standalone", is_flag=True, help="LaTeX: wrap in a compilable document.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def table3(run: Path, fmt: str, standalone: bool, out: Path | None) -> None:
    """Table 3: per-class CheXpert accuracy, precision, recall and F1 of RUN (its per_class.csv)."""
    text = per_class_table(load_run(run, require_per_class=True)).render(fmt)
    if fmt == "latex" and standalone:
        text = latex_document(text)
    emit(text, out)
