"""``boxmed-eval score``: score reports produced elsewhere, or add metrics to a run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from boxmed_eval.boxes import BOX_FORMATS
from boxmed_eval.cli.app import main
from boxmed_eval.cli.options import (allow_missing_option, check_missing_metrics, judge_options,
                                     metric_options_from_cli, print_summary, requested_metrics)
from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.judges.phi import guard_dataset
from boxmed_eval.metrics.base import resolve_metric_names
from boxmed_eval.records import Prediction, Study, check_same_ids, read_reports, write_jsonl
from boxmed_eval.runs import RUN_OUTPUTS, RunDirectory, read_run_references

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
@click.option("--task", type=click.Choice(["report", "grounding"]), default="report", show_default=True,
              help="grounding: --pred holds one record per (study, phrase) (id '<study>#<n>' or study_id + phrase, "
                   "boxes), --ref the studies with their boxes (a run's references.jsonl).")
@click.option("--box-format", type=click.Choice(list(BOX_FORMATS)), default="xyxy", show_default=True,
              help="Coordinates of the boxes in --pred: " + "; ".join(f"{k} = {v}" for k, v in BOX_FORMATS.items())
                   + ". Normalised ones take the image size from the record (image_width, image_height) or the "
                     "reference boxes.")
@allow_missing_option
@judge_options
def score_command(pred: str | None, ref: str | None, run_path: str | None, out: str | None, metrics: str | None,
                  metric_option: tuple[str, ...], dataset: str | None, overwrite: bool, task: str, box_format: str,
                  allow_missing_metrics: bool, judge: tuple[str, ...], judge_model: tuple[str, ...],
                  allow_remote_phi: bool, trust_remote_code: bool) -> None:
    """Score --pred against --ref, or add --metrics to an existing --run."""
    target = run_path or out or str(Path("runs") / f"score_{Path(pred).stem}" if pred else "")
    if not target:
        raise BoxmedError("pass --pred FILE and --ref FILE (or --run DIR)")
    if run_path and not Path(run_path).is_dir():
        raise BoxmedError(f"{run_path} is not a run directory (no such folder)")
    with RunDirectory(target).lock():
        if task == "grounding" or _is_grounding_run(run_path):
            if metrics or judge or judge_model:
                raise BoxmedError("--metrics and --judge do not apply to phrase grounding (its numbers are fixed: "
                                  "mIoU, Acc@IoU, AP); choose the matching with --metric-option grounding.matching=...")
            _score_grounding(pred, ref, run_path, target, metric_option, dataset, overwrite, box_format)
            return
        _score(pred, ref, run_path, target, metrics, metric_option, dataset, overwrite, allow_missing_metrics,
               judge, judge_model, allow_remote_phi, trust_remote_code, box_format)


def _is_grounding_run(run_path: str | None) -> bool:
    config = RunDirectory(run_path).read_config() if run_path else None
    return bool(config and config.get("task") == "grounding")


def _score_grounding(pred: str | None, ref: str | None, run_path: str | None, out: str,
                     metric_option: tuple[str, ...], dataset: str | None, overwrite: bool, box_format: str) -> None:
    """Phrase grounding: re-score a grounding run, or score imported answers (--pred) against --ref."""
    from boxmed_eval import phrase_grounding as pg
    from boxmed_eval.rundata import load_run

    options = metric_options_from_cli(metric_option).get("grounding", {})
    if run_path:
        if pred or ref:
            raise BoxmedError("use either --run DIR or --pred FILE --ref FILE, not both")
        run_dir = RunDirectory(run_path)
        if (run_dir.read_config() or {}).get("task") != "grounding":
            raise BoxmedError(f"{run_path} is not a grounding run (run.json task); drop --task grounding")
        pg.rescore(run_dir, options)
    else:
        if not (pred and ref):
            raise BoxmedError("pass --pred FILE and --ref FILE (or --run DIR)")
        studies = read_run_references(Path(ref))
        references = pg.build_queries(studies.values())
        if not references:
            raise DataError("no reference boxes with phrases", file=ref,
                            fix="--ref is a JSONL of studies with boxes (a grounding run's references.jsonl)")
        answers = pg.import_grounding_answers(Path(pred), box_format, references)
        run_dir = RunDirectory(out)
        inputs = {Path(pred).resolve(), Path(ref).resolve()}
        written = {(run_dir.path / n).resolve() for n in ("references.jsonl", *RUN_OUTPUTS)}
        if inputs & written:
            raise BoxmedError(f"--out {run_dir.path} would overwrite the input file {sorted(map(str, inputs & written))[0]}; "
                              "pass another --out directory")
        pg.check_task(run_dir, "grounding", overwrite)
        config = {"model": "predictions", "model_args": {"path": str(Path(pred).resolve())}, "dataset": dataset,
                  "references": str(Path(ref).resolve()), "split": None, "task": "grounding", "box_format": box_format,
                  "n_queries": len(references), "inputs_sha256": {"pred": _sha256(pred), "ref": _sha256(ref)}}
        run_dir.start(config, overwrite=overwrite, identity=(*SCORE_IDENTITY, "task", "box_format"), keep=inputs)
        write_jsonl(run_dir.path / pg.GROUNDING_PREDICTIONS, [answers[r.query.id].to_dict(r.query) for r in references])
        write_jsonl(run_dir.path / "references.jsonl", [s.to_dict() for s in studies.values()])
        pg.score_run_directory(run_dir, references, answers, options)
    click.echo(pg.grounding_table([load_run(run_dir.path)]).render("markdown"), nl=False)
    click.echo(f"run directory: {run_dir.path}")


def _score(pred: str | None, ref: str | None, run_path: str | None, out: str, metrics: str | None,
           metric_option: tuple[str, ...], dataset: str | None, overwrite: bool, allow_missing_metrics: bool,
           judge: tuple[str, ...], judge_model: tuple[str, ...], allow_remote_phi: bool,
           trust_remote_code: bool, box_format: str = "xyxy") -> None:
    from boxmed_eval.evaluation import default_metrics, score
    from boxmed_eval.phrase_grounding import import_report_boxes, read_reference_boxes

    options = metric_options_from_cli(metric_option, judge, judge_model, allow_remote_phi, trust_remote_code)
    metric_names = resolve_metric_names(metrics) if metrics else default_metrics(options)
    if run_path:
        if pred or ref:
            raise BoxmedError("use either --run DIR or --pred FILE --ref FILE, not both")
        run_dir = RunDirectory(run_path)
        config = run_dir.read_config()
        if config is None:
            raise BoxmedError(f"{run_path} is not a run directory (no run.json)")
        studies = read_run_references(run_dir.path / "references.jsonl")
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
        if box_format != "xyxy":  # recorded (and part of the identity) only when not the default
            config["box_format"] = box_format
        # Same inputs: resume (metrics already there and the judge cache are kept). Others:
        # refused unless --overwrite, which removes only what boxmed-eval wrote.
        previous = run_dir.read_config()
        from boxmed_eval.phrase_grounding import check_task

        check_task(run_dir, "report", overwrite)
        run_dir.start(config, overwrite=overwrite, identity=(*SCORE_IDENTITY, "box_format"), keep=inputs)
        ref_boxes = read_reference_boxes(Path(ref))  # a JSONL of studies with boxes (references.jsonl)
        studies = {i: Study(id=i, image_paths=[], findings=text, boxes=ref_boxes.get(i, []))
                   for i, text in references.items()}
        pred_boxes = import_report_boxes(Path(pred), box_format, studies)  # --box-format -> pixels
        predictions = {i: Prediction(id=i, report=reports[i], boxes=pred_boxes.get(i, [])) for i in references}
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
