"""``boxmed-eval score``: score reports produced elsewhere, or add metrics to a run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.cli.options import (allow_missing_option, check_missing_metrics, judge_options,
                                     metric_options_from_cli, print_summary, requested_metrics)
from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.judges.phi import guard_dataset
from boxmed_eval.metrics.base import resolve_metric_names
from boxmed_eval.records import Prediction, Study, check_same_ids, iter_jsonl, read_reports, write_jsonl
from boxmed_eval.runs import RUN_OUTPUTS, RunDirectory

# What makes two `score --pred/--ref` runs the same: the files, their content, the dataset.
SCORE_IDENTITY = ("model", "model_args", "dataset", "references", "inputs_sha256")


@main.command("score")
@click.option("--pred", type=click.Path(dir_okay=False), default=None, help="Generated reports (JSONL/CSV: id, report).")
@click.option("--ref", type=click.Path(dir_okay=False), default=None, help="Reference reports (JSONL/CSV: id, report).")
@click.option("--run", "run_path", type=click.Path(file_okay=False), default=None,
              help="Add metrics to this run directory instead.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output directory (with --pred/--ref).")
@click.option("--metrics", default=None, help="Comma-separated metric families (default: all that run offline).")
@click.option("--metric-option", multiple=True, metavar="METRIC.KEY=VALUE", help="e.g. nlg.preprocess=none")
@click.option("--dataset", default=None, help="Name of the dataset the references come from (PHI guard of judges).")
@click.option("--overwrite", is_flag=True,
              help="With --pred/--ref: replace a different scoring run in --out (only files boxmed-eval wrote; "
                   "the judge cache is kept).")
@allow_missing_option
@judge_options
def score_command(pred: str | None, ref: str | None, run_path: str | None, out: str | None, metrics: str | None,
                  metric_option: tuple[str, ...], dataset: str | None, overwrite: bool, allow_missing_metrics: bool,
                  judge: tuple[str, ...], judge_model: tuple[str, ...], allow_remote_phi: bool,
                  trust_remote_code: bool) -> None:
    """Score --pred against --ref, or add --metrics to an existing --run."""
    target = run_path or out or str(Path("runs") / f"score_{Path(pred).stem}" if pred else "")
    if not target:
        raise BoxmedError("pass --pred FILE and --ref FILE (or --run DIR)")
    if run_path and not Path(run_path).is_dir():
        raise BoxmedError(f"{run_path} is not a run directory (no such folder)")
    with RunDirectory(target).lock():
        _score(pred, ref, run_path, target, metrics, metric_option, dataset, overwrite, allow_missing_metrics,
               judge, judge_model, allow_remote_phi, trust_remote_code)


def _score(pred: str | None, ref: str | None, run_path: str | None, out: str, metrics: str | None,
           metric_option: tuple[str, ...], dataset: str | None, overwrite: bool, allow_missing_metrics: bool,
           judge: tuple[str, ...], judge_model: tuple[str, ...], allow_remote_phi: bool,
           trust_remote_code: bool) -> None:
    from boxmed_eval.evaluation import default_metrics, score

    options = metric_options_from_cli(metric_option, judge, judge_model, allow_remote_phi, trust_remote_code)
    metric_names = resolve_metric_names(metrics) if metrics else default_metrics(options)
    if run_path:
        if pred or ref:
            raise BoxmedError("use either --run DIR or --pred FILE --ref FILE, not both")
        run_dir = RunDirectory(run_path)
        config = run_dir.read_config()
        if config is None:
            raise BoxmedError(f"{run_path} is not a run directory (no run.json)")
        studies = _read_references(run_dir.path / "references.jsonl")
        predictions = run_dir.read_predictions()
        check_same_ids(predictions, studies, pred_file=run_dir.predictions_path, ref_file=run_dir.path / "references.jsonl")
        # run.json's dataset decides; a --dataset can only make the PHI guard stricter
        dataset = guard_dataset(config.get("dataset"), dataset)
        merge = True
    else:
        if not (pred and ref):
            raise BoxmedError("pass --pred FILE and --ref FILE (or --run DIR)")
        references = read_reports(ref, role="reference")
        reports = read_reports(pred, role="prediction", allow_empty=True)
        check_same_ids(reports, references, pred_file=pred, ref_file=ref)
        run_dir = RunDirectory(out)
        inputs = {Path(pred).resolve(), Path(ref).resolve()}
        written = {(run_dir.path / n).resolve() for n in ("predictions.jsonl", "references.jsonl", *RUN_OUTPUTS)}
        clash = sorted(str(p) for p in inputs & written)
        if clash:
            raise BoxmedError(f"--out {run_dir.path} would overwrite the input file {clash[0]}; "
                              "pass another --out directory")
        config = {"model": "predictions", "model_args": {"path": str(Path(pred).resolve())}, "dataset": dataset,
                  "references": str(Path(ref).resolve()), "split": None, "n_studies": len(references),
                  "inputs_sha256": {"pred": _sha256(pred), "ref": _sha256(ref)}}
        # Same inputs: resume (metrics already there and the judge cache are kept). Others:
        # refused unless --overwrite, which removes only what boxmed-eval wrote.
        previous = run_dir.read_config()
        run_dir.start(config, overwrite=overwrite, identity=SCORE_IDENTITY, keep=inputs)
        studies = {i: Study(id=i, image_paths=[], findings=text) for i, text in references.items()}
        predictions = {i: Prediction(id=i, report=reports[i]) for i in references}
        write_jsonl(run_dir.predictions_path, [predictions[i].to_dict() for i in references])
        write_jsonl(run_dir.path / "references.jsonl", [s.to_dict() for s in studies.values()])
        merge = previous is not None and not overwrite
    summary = score(run_dir, {i: s.findings for i, s in studies.items()}, predictions, metric_names=metric_names,
                    metric_options=options, studies=studies, merge_existing=merge, dataset=dataset)
    print_summary(summary)
    click.echo(f"run directory: {run_dir.path}")
    check_missing_metrics(summary, requested_metrics(metrics, metric_names, options), allow_missing_metrics)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_references(path: Path) -> dict[str, Study]:
    if not path.exists():
        raise DataError("the run has no references.jsonl", file=path,
                        fix="re-run `boxmed-eval run` with the same arguments (it resumes and writes it)")
    studies: dict[str, Study] = {}
    for number, obj in iter_jsonl(path):
        try:
            study = Study.from_dict(obj)
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"invalid study ({exc})", file=path, record=f"line {number}") from None
        studies[study.id] = study
    return studies
