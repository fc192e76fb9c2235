"""``boxmed-eval leaderboard --dataset D``: the paper's Table 1 / 2 plus local runs."""

from __future__ import annotations

from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.cli.compare import emit
from boxmed_eval.rundata import load_run
from boxmed_eval.tables import FORMATS, latex_document, leaderboard_table


@main.command("leaderboard")
@click.option("--dataset", required=True,
              help="mimic (Table 1) or iu_xray (Table 2); any other dataset name gives a table of local runs only.")
@click.option("--runs", "run_dirs", multiple=True, type=click.Path(path_type=Path),
              help="A local run directory (repeat the option for several).")
@click.argument("more_runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--metrics", default=None, help="Comma list of columns (default: the paper's columns).")
@click.option("--source", type=click.Choice(["paper", "rexrank", "rexrank-8152f99"]), default="paper",
              show_default=True,
              help="Published rows: the BoxMed-RL paper's table, or the public ReXrank IU X-Ray leaderboard "
                   "(its findings board at 1602a4c; rexrank-8152f99: the earlier board with RadCliQ-v0).")
@click.option("--no-published", is_flag=True, help="Leave out the published rows.")
@click.option("--published-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the published CSVs (default: benchmarks/published of the source tree).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--standalone", is_flag=True, help="LaTeX: wrap in a compilable document.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def leaderboard(dataset: str, run_dirs: tuple[Path, ...], more_runs: tuple[Path, ...], metrics: str | None,
                source: str, no_published: bool, published_dir: Path | None, fmt: str, standalone: bool,
                out: Path | None) -> None:
    """The paper's comparison table for DATASET, grouped as the paper groups methods, with
    local runs (corpus values from summary.json) in their own group. Best value per column in
    bold; '-' where a method does not report a metric. Run directories may also be given as
    arguments: `boxmed-eval leaderboard --dataset mimic runs/a runs/b`."""
    runs = [load_run(path) for path in (*run_dirs, *more_runs)]
    metric_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    table = leaderboard_table(dataset, runs, published=not no_published, published_directory=published_dir,
                              metrics=metric_list, source=source)
    text = table.render(fmt)
    if fmt == "latex" and standalone:
        text = latex_document(text)
    emit(text, out)
