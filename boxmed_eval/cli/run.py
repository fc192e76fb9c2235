"""``boxmed-eval run``: generate with a model plugin on a dataset split, then score."""

from __future__ import annotations

import click

from boxmed_eval.cli.app import main
from boxmed_eval.cli.options import (allow_missing_option, check_missing_metrics, judge_options,
                                     metric_options_from_cli, print_summary, requested_metrics)
from boxmed_eval.errors import BoxmedError
from boxmed_eval.metrics.base import resolve_metric_names
from boxmed_eval.plugins import parse_model_args


@main.command("run")
@click.option("--task", type=click.Choice(["report", "grounding"]), default="report", show_default=True,
              help="report: generate and score reports; grounding: phrase grounding (each reference phrase -> boxes, "
                   "scored with mIoU, Acc@IoU, AP per category; the model needs a ground() method).")
@click.option("--model", "model", required=True, help="Model plugin name (see `boxmed-eval models`).")
@click.option("--dataset", required=True, help="Dataset name (see `boxmed-eval datasets`).")
@click.option("--split", default="test", show_default=True, help="train, val or test.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (else the dataset's environment variable).")
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE", help="Dataset adapter option, repeatable.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/MODEL_DATASET_SPLIT). An existing partial run resumes.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N studies of the split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--metrics", default=None, help="Comma-separated metric families (default: all that run offline; 'all').")
@click.option("--metric-option", multiple=True, metavar="METRIC.KEY=VALUE", help="e.g. nlg.preprocess=none")
@click.option("--model-arg", multiple=True, metavar="KEY=VALUE", help="Plugin argument, repeatable.")
@click.option("--overwrite", is_flag=True, help="Discard an existing run in --out and start again.")
@allow_missing_option
@judge_options
def run_command(task: str, model: str, dataset: str, split: str, data_root: str | None, dataset_option: tuple[str, ...],
                out: str | None, limit: int | None, batch_size: int, seed: int, metrics: str | None,
                metric_option: tuple[str, ...], model_arg: tuple[str, ...], overwrite: bool,
                allow_missing_metrics: bool, judge: tuple[str, ...], judge_model: tuple[str, ...], allow_remote_phi: bool,
                trust_remote_code: bool) -> None:
    """Generate reports with MODEL on DATASET, then score them (resumes a partial run)."""
    from boxmed_eval.evaluation import RunConfig, run

    options = metric_options_from_cli(metric_option, judge, judge_model, allow_remote_phi, trust_remote_code)
    metric_names = resolve_metric_names(metrics) if metrics else None
    config = RunConfig(model=model, dataset=dataset, split=split, data_root=data_root,
                       dataset_options=parse_model_args(dataset_option), model_args=parse_model_args(model_arg),
                       out=out, limit=limit, batch_size=batch_size, seed=seed,
                       metrics=metric_names, metric_options=options,
                       overwrite=overwrite, task=task)
    if task == "grounding" and metrics:
        raise BoxmedError("--metrics does not apply to --task grounding (its numbers are fixed: mIoU, Acc@IoU, AP); "
                          "choose the box matching with --metric-option grounding.matching=...")
    run_dir, summary = run(config)
    if summary and task == "grounding":
        from boxmed_eval.phrase_grounding import grounding_table
        from boxmed_eval.rundata import load_run

        click.echo(grounding_table([load_run(run_dir.path)]).render("markdown"), nl=False)
        click.echo(f"run directory: {run_dir.path}")
    elif summary:
        print_summary(summary)
        click.echo(f"run directory: {run_dir.path}")
        check_missing_metrics(summary, requested_metrics(metrics, metric_names or [], options), allow_missing_metrics)
