"""``boxmed-eval compare BASE OTHER...``: paired significance tests per metric."""

from __future__ import annotations

from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.records import atomic_write_text, read_reports
from boxmed_eval.rundata import load_run
from boxmed_eval.stats import ALTERNATIVES, CORRECTIONS, RADEVAL_SEED, RADEVAL_TRIALS, TESTS, ZERO_METHODS, compare_runs
from boxmed_eval.tables import FORMATS, comparison_table


def emit(text: str, out: Path | None) -> None:
    """Print, or write atomically to ``out``."""
    if out is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}", err=True)


@main.command("compare")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("others", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--alternative", type=click.Choice(ALTERNATIVES), default="less", show_default=True,
              help="Direction, on OTHER - BASE per study: 'less' asks whether each OTHER scores lower than BASE "
                   "(the paper: BASE = full model, OTHER = ablations); 'greater' whether it scores higher.")
@click.option("--test", "test", type=click.Choice(TESTS), default="wilcoxon", show_default=True,
              help="wilcoxon: signed-rank on per-sample scores (the paper); randomization: paired approximate "
                   "randomisation (RadEval); bootstrap: 95% CI of the difference of corpus values.")
@click.option("--zero-method", type=click.Choice(ZERO_METHODS), default="wilcox", show_default=True,
              help="Wilcoxon: studies with identical scores are dropped (wilcox), ranked then dropped (pratt), "
                   "or split between signs (zsplit).")
@click.option("--correction", type=click.Choice(CORRECTIONS), default="none", show_default=True,
              help="Multiple-comparison correction across the metrics of each OTHER run.")
@click.option("--metrics", default=None, help="Comma list of metrics (default: every metric all runs have).")
@click.option("--references", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSONL/CSV with id and report of the references: lets randomization/bootstrap recompute corpus "
                   "BLEU from n-gram counts instead of averaging per-sample BLEU.")
@click.option("--trials", type=int, default=RADEVAL_TRIALS, show_default=True, help="Randomisation trials.")
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=RADEVAL_SEED, show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
def compare(base: Path, others: tuple[Path, ...], alternative: str, test: str, zero_method: str, correction: str,
            metrics: str | None, references: Path | None, trials: int, resamples: int, seed: int, fmt: str,
            out: Path | None) -> None:
    """Compare runs with BASE, metric by metric: each run's value, the difference, the
    p-value and stars (* p < 0.05, ** p < 0.01), runs paired by study id.

    Runs must hold the same study ids (else the differing ids are listed). Studies without a
    score on either side (NaN, e.g. an unparsable judge reply) are left out and counted.
    """
    base_run = load_run(base, require_scores=True)
    other_runs = [load_run(path, require_scores=True) for path in others]
    metric_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    refs = read_reports(references, role="reference") if references else None
    comparison = compare_runs(base_run, other_runs, metrics=metric_list, test=test, alternative=alternative,
                              zero_method=zero_method, correction=correction, references=refs, trials=trials,
                              n_resamples=resamples, seed=seed)
    emit(comparison_table(comparison).render(fmt), out)
