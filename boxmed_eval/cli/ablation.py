"""``boxmed-eval ablation SPEC``: Table 4 / Table 5 style ablations with Wilcoxon stars."""

from __future__ import annotations

from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.cli.compare import emit
from boxmed_eval.stats import CORRECTIONS
from boxmed_eval.tables import FORMATS, AblationSpec, ablation_table, latex_document


@main.command("ablation")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--runs-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the spec's relative run paths start from (default: the spec's runs_root, "
                   "relative to the spec file).")
@click.option("--correction", type=click.Choice(CORRECTIONS), default=None,
              help="Override the spec's multiple-comparison correction.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--standalone", is_flag=True, help="LaTeX: wrap in a compilable document.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def ablation(spec: Path, runs_root: Path | None, correction: str | None, fmt: str, standalone: bool,
             out: Path | None) -> None:
    """Render the ablation table described by the TOML file SPEC: one row per run, tick
    columns (e.g. MCL / SVR / Adapter for Table 4, vision tower / projector / adapter for
    Table 5), metric values, and stars from a one-tailed Wilcoxon signed-rank test of each
    row against the row marked `full = true` (* p < 0.05, ** p < 0.01).

    Shipped specs: benchmarks/ablations/table4.toml and table5.toml (their format is
    documented at the top of each file)."""
    parsed = AblationSpec.from_toml(spec, runs_root=runs_root)
    if correction is not None:
        parsed.correction = correction
    text = ablation_table(parsed).render(fmt)
    if fmt == "latex" and standalone:
        text = latex_document(text)
    emit(text, out)
