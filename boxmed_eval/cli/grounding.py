"""``boxmed-eval grounding-table RUN...``: the phrase-grounding table of grounding runs."""

from __future__ import annotations

from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.tables import FORMATS


@main.command("grounding-table")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
def grounding_table_command(runs: tuple[Path, ...], fmt: str, out: Path | None) -> None:
    """mIoU, Acc@IoU 0.1/0.3/0.5/0.7 and AP@0.5 of `run --task grounding` runs: per MS-CXR
    category for one run, one row per run for several."""
    from boxmed_eval.cli.compare import emit
    from boxmed_eval.phrase_grounding import grounding_table
    from boxmed_eval.rundata import load_run

    emit(grounding_table([load_run(path) for path in runs]).render(fmt), out)
