"""``make paper-demo`` / ``boxmed-eval reproduce demo``: the paper's experiments on the synthetic
``demo`` dataset, on a CPU, in one command.

Stages (one progress line each, with the elapsed time; everything resumes on rerun)::

    1  the demo dataset (generated on first use)
    2  BoxMed-RL Table-4 rows from the `small` preset with boxmed_model/configs/demo_cpu.toml
       (its vision tower pretrained once, shared by every row): full and w/o SVR (sharing full's
       MCL) here, while a child process on the second core trains R2Gen (`--preset demo`) and the
       rows without MCL (log OUT/train/side_lane.log)              -> OUT/train/<row>/, OUT/train/r2gen/
    3  waiting for the second core
    4  runs on demo/test: retrieval, r2gen, every BoxMed-RL row (grounded mode: reports, reasoning
       and one box per sentence), metrics nlg, chexpert, grounding -> OUT/runs/<name>/
    5  SVR's effect on grounding alone: R_IoU of the MCL and of the SVR weights on the test
       split's finding phrases (SVR prompt, greedy)               -> OUT/phrase_grounding.json
    6  tables: Table 1-style leaderboard of the local runs, Table 3 (per class, BoxMed-RL full),
       Table 4 with one-tailed Wilcoxon stars                     -> OUT/table{1,3,4}_demo.{md,csv}
    7  Figures 5 and 6                                             -> OUT/figures/
    8  the issue-16 targets, measured                              -> OUT/targets.{json,md}

Nothing is tuned on the test split: the recipes were chosen on demo/val (DEMO_RESULTS.md).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from boxmed_eval.errors import BoxmedError

log = logging.getLogger(__name__)

CONFIG = Path(__file__).resolve().parent / "configs" / "demo_cpu.toml"
ROWS = ("full", "wo_svr", "wo_mcl", "wo_mcl_svr")
METRICS = ["nlg", "chexpert", "grounding"]
TABLE4_METRICS = ["bleu_1", "bleu_4", "meteor", "rouge_l", "chexpert_f1", "chexpert_example_f1", "grounding_miou"]
LEADERBOARD_METRICS = ["bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "chexpert_precision", "chexpert_recall",
                       "chexpert_f1", "grounding_miou", "grounding_acc_0.5"]


class Progress:
    """``[paper-demo i/n] what (elapsed)`` lines and the total time."""

    def __init__(self, total: int) -> None:
        self.total, self.index, self.started = total, 0, time.perf_counter()

    def stage(self, what: str) -> None:
        self.index += 1
        click.echo(f"[paper-demo {self.index}/{self.total}] {what} (elapsed {self.elapsed():.0f} s)", err=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def distinct_reports(run_dir: Path) -> int:
    from boxmed_eval.rundata import read_predictions
    from boxmed_eval.text import normalize_text

    return len({normalize_text(p.report).lower() for p in read_predictions(run_dir / "predictions.jsonl").values()})


def best_constant_report(candidates: list[str], references: list[str]) -> dict[str, Any]:
    """The report among ``candidates`` that, written for every study, scores the highest CheXpert
    micro F1 against ``references`` (rules labeler, positive = 1, 14 classes, as chexpert_f1)."""
    import numpy as np

    from boxmed_eval.metrics.chexpert import binarize
    from boxmed_eval.metrics.labelers import get_labeler

    labeler = get_labeler("rules")
    truth = binarize(labeler.label(references), uncertain_positive=False)
    unique = sorted(set(candidates))
    predicted = binarize(labeler.label(unique), uncertain_positive=False)
    positives = truth.sum(axis=0)  # per class
    n = len(references)
    tp = predicted @ positives  # a constant prediction hits every positive of its classes
    fp = predicted.sum(axis=1) * n - tp
    fn = truth.sum() - tp
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    best = int(np.argmax(f1))
    return {"report": unique[best], "chexpert_f1": float(f1[best]), "candidates": len(unique)}


def phrase_grounding(model_dir: Path, studies: list[Any], scale: float, *, batch_size: int = 16) -> dict[str, Any]:
    """Mean R_IoU (rewards.iou_reward_one) of a phase-I model on every finding phrase of
    ``studies`` asked with the SVR prompt (greedy), and the share of answers with a box."""
    from boxmed_model import prompts
    from boxmed_model.data import load_image, svr_queries
    from boxmed_model.plugin import BoxMedRL
    from boxmed_model.rewards import answer_text, iou_reward_one, parse_boxes

    queries = svr_queries(studies, scale)
    plugin = BoxMedRL(weights=str(model_dir), image_scale=scale, batch_size=batch_size)
    plugin.setup()
    images = [load_image(path, scale)[0] for _, path, _, _ in queries]
    answers = plugin._generate([prompts.svr_messages(phrase) for _, _, phrase, _ in queries], images, 72)
    ious = [iou_reward_one(answer, solution) for answer, (_, _, _, solution) in zip(answers, queries)]
    return {"model": str(model_dir), "phrases": len(queries), "mean_r_iou": sum(ious) / len(ious),
            "with_box": sum(bool(parse_boxes(answer_text(a))) for a in answers) / len(answers),
            "per_phrase": [{"id": sid, "phrase": phrase, "r_iou": value}
                           for (sid, _, phrase, _), value in zip(queries, ious)]}


def _grounding_per_study(run_data: Any, studies: list[Any]) -> Any:
    """Per-study grounding mIoU of a run over the studies with reference boxes; a run that
    predicted no box at all has no grounding column (the metric is skipped): every reference
    box then scores IoU 0, as the metric scores a missing prediction."""
    import pandas as pd

    scores = run_data.require_scores()
    boxed = [s.id for s in studies if s.boxes]
    if "grounding_miou" in scores.columns:
        return scores["grounding_miou"].reindex(boxed)
    return pd.Series(0.0, index=pd.Index(boxed, name="id"))


def _wilcoxon_greater(a: Any, b: Any) -> dict[str, Any]:
    """One-tailed Wilcoxon signed-rank test (a > b) on paired per-study values (NaN pairs dropped,
    zero differences dropped, as boxmed_eval.stats' default)."""
    from scipy.stats import wilcoxon

    paired = a.to_frame("a").join(b.to_frame("b"), how="inner").dropna()
    diff = paired["a"] - paired["b"]
    nonzero = int((diff != 0).sum())
    if nonzero == 0:
        return {"n": len(paired), "nonzero": 0, "p": 1.0}
    result = wilcoxon(paired["a"], paired["b"], alternative="greater", zero_method="wilcox")
    return {"n": len(paired), "nonzero": nonzero, "p": float(result.pvalue),
            "mean_a": float(paired["a"].mean()), "mean_b": float(paired["b"].mean())}


def paper_demo(out: Path, *, base: str = "small", config_file: str | None = None, max_steps: int | None = None,
               r2gen_epochs: int | None = None, train_limit: int | None = None, eval_limit: int | None = None,
               rows: tuple[str, ...] = ROWS, with_r2gen: bool = True, threads: int = 1,
               batch_size: int = 8) -> dict[str, Any]:
    """Run every stage (module docstring) into ``out``; returns the targets dictionary."""
    import torch

    from boxmed_eval.datasets import get_dataset
    from boxmed_eval.evaluation import RunConfig, run
    from boxmed_eval.rundata import load_run
    from boxmed_eval.tables import AblationSpec, ablation_table, leaderboard_table, per_class_table
    from boxmed_model.plugin import build_config, parse_wiring, prepare_base
    from boxmed_model.reproduce import _spec, plan_table4

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(8)
    progress.stage("demo dataset")
    adapter = get_dataset("demo")
    test_studies = adapter.load("test")[:eval_limit] if eval_limit else adapter.load("test")
    train_studies = adapter.load("train")
    wiring = parse_wiring((), "demo", (), ())
    cfg0 = build_config(config_file or str(CONFIG), None, None, max_steps, None)

    plan = plan_table4(list(rows))
    train_dir = out / "train"
    r2gen_dir = train_dir / "r2gen"
    side: list[tuple[str, Any]] = []  # the second core's jobs, in a child process
    if with_r2gen:
        from plugins.r2gen.train import PRESETS, TrainingOptions

        options = {**PRESETS["demo"], **({"epochs": r2gen_epochs} if r2gen_epochs else {})}
        if not (r2gen_dir / "model_best.pth").is_file() or not _r2gen_finished(r2gen_dir, options["epochs"]):
            side.append(("r2gen", TrainingOptions(dataset="demo", out=str(r2gen_dir), train_limit=train_limit,
                                                  val_limit=eval_limit, **options)))
    # The rows without MCL share nothing with full and w/o SVR: they train on the second core.
    main_rows = [job for job in plan if replace(cfg0, **job[1]).use_mcl]
    side += [("row", job) for job in plan if job not in main_rows]
    progress.stage(f"training BoxMed-RL rows {', '.join(r for r, _, _ in plan)} (base {base})"
                   + (", R2Gen alongside" if any(kind == "r2gen" for kind, _ in side) else ""))
    # Built (and its vision tower pretrained) once, before two processes would both build it.
    prepare_base(base, train_dir, [s.findings for s in train_studies[:train_limit]], cfg0,
                 train_studies[:train_limit])
    rows_trainer = RowTraining(base, cfg0, wiring, train_dir, train_limit)
    lane = SideLane.start(side, rows_trainer, threads, train_dir / "side_lane.log") if side else None
    if lane is not None:
        click.echo(f"  on the second core: {', '.join(lane.names)} (log {lane.log})", err=True)
    for job in main_rows:
        rows_trainer.train(job)
        click.echo(f"  {job[0]}: trained (elapsed {progress.elapsed():.0f} s)", err=True)

    progress.stage("waiting for the second core (" + ", ".join(lane.names) + ")" if lane else
                   "R2Gen trained before" if with_r2gen else "R2Gen skipped")
    if lane is not None:
        lane.wait()
        click.echo(f"  second core done (elapsed {progress.elapsed():.0f} s)", err=True)

    progress.stage(f"generating and scoring on demo/test ({len(test_studies)} studies)")
    runs: dict[str, Path] = {}

    def run_one(name: str, model: str, model_args: dict[str, Any]) -> None:
        started = time.perf_counter()
        run(RunConfig(model=model, dataset="demo", split="test", model_args=model_args, out=str(out / "runs" / name),
                      limit=eval_limit, batch_size=batch_size, metrics=list(METRICS)))
        runs[name] = out / "runs" / name
        click.echo(f"  {name}: {time.perf_counter() - started:.0f} s", err=True)

    run_one("retrieval", "retrieval", {})
    if with_r2gen:
        run_one("r2gen", "r2gen", {"weights": str(r2gen_dir / "model_best.pth")})
    for row, _, _ in plan:
        run_one(row, "boxmedrl", {"weights": str(out / "train" / row), "mode": "grounded", "ablation": row})

    progress.stage("phrase grounding of the MCL and SVR weights on demo/test phrases")
    grounding: dict[str, Any] = {}
    for label, path in (("mcl", out / "train" / "full" / "mcl" / "final"),
                        ("svr", out / "train" / "full" / "svr" / "final"),
                        ("svr_without_mcl", out / "train" / "wo_mcl" / "svr" / "final")):
        if (path / "config.json").is_file():
            grounding[label] = phrase_grounding(path, test_studies, cfg0.image_scale)
    (out / "phrase_grounding.json").write_text(json.dumps(grounding, indent=1) + "\n", encoding="utf-8")

    progress.stage("tables 1, 3 and 4")
    loaded = {name: load_run(path) for name, path in runs.items()}
    board = leaderboard_table("demo", list(loaded.values()), published=False,
                              metrics=[m for m in LEADERBOARD_METRICS if all(m in r.summary for r in loaded.values())])
    _write(out / "table1_demo", board)
    if "full" in loaded:
        _write(out / "table3_demo", per_class_table(loaded["full"]))
    if len(plan) >= 2 and "full" in rows:
        spec = AblationSpec.from_toml(_spec("table4"), runs_root=out / "runs")
        spec.rows = [r for r in spec.rows if r.run.name in rows]
        spec.title = "Table 4 (demo, CPU): ablation of the BoxMed-RL components"
        spec.metrics = [m for m in TABLE4_METRICS if all(m in loaded[r.run.name].summary for r in spec.rows)]
        _write(out / "table4_demo", ablation_table(spec))

    progress.stage("figures 5 and 6")
    from boxmed_eval.plots import figure5, plot_case

    figures = out / "figures"
    figure5(list(loaded.values()), figures)
    if "full" in loaded:
        predictions = loaded["full"].predictions()
        # studies with reference boxes, those the model also drew boxes for first
        boxed = [s for s in test_studies if s.boxes and s.id in predictions]
        cases = sorted(boxed, key=lambda s: not predictions[s.id].boxes)[:2]
        for study in cases:
            plot_case(study, predictions[study.id], figures / f"figure6_{study.id[:8]}",
                      title=f"BoxMed-RL (demo) - {study.id[:8]}")

    progress.stage("targets")
    targets = measure_targets(out, loaded, grounding, train_studies, test_studies)
    targets["total_seconds"] = round(progress.elapsed(), 1)
    (out / "targets.json").write_text(json.dumps(targets, indent=1) + "\n", encoding="utf-8")
    (out / "targets.md").write_text(render_targets(targets) + "\n", encoding="utf-8")
    click.echo(render_targets(targets))
    click.echo(f"[paper-demo] done in {progress.elapsed():.0f} s; tables, figures and targets in {out}", err=True)
    return targets


@dataclass
class RowTraining:
    """Trains one Table-4 row (``plan_table4``'s (row, overrides, shared stages)) into ``train_dir/<row>``."""

    base: str
    cfg: Any
    wiring: Any
    train_dir: Path
    train_limit: int | None = None

    def train(self, job: tuple[str, dict[str, Any], dict[str, str]]) -> None:
        from boxmed_model.plugin import train_from_wiring

        row, overrides, shared_from = job
        shared = {stage: str(self.train_dir / source / stage / "final") for stage, source in shared_from.items()}
        train_from_wiring("all", self.base, replace(self.cfg, **overrides), self.wiring, self.train_dir / row,
                          limit=self.train_limit, shared=shared, base_dir=self.train_dir)


@dataclass
class SideLane:
    """Training jobs (("r2gen", TrainingOptions) or ("row", plan entry)) run one after another in a
    spawned child process (a clean torch) on the second core, its output in ``log``."""

    process: Any
    log: Path
    names: list[str]

    @classmethod
    def start(cls, jobs: list[tuple[str, Any]], rows: RowTraining, threads: int, log: Path) -> "SideLane":
        import multiprocessing

        log.parent.mkdir(parents=True, exist_ok=True)
        process = multiprocessing.get_context("spawn").Process(target=_side_lane, args=(jobs, rows, threads, str(log)),
                                                               name="paper-demo-side")
        process.start()
        return cls(process, log, ["R2Gen" if kind == "r2gen" else job[0] for kind, job in jobs])

    def wait(self) -> None:
        self.process.join()
        if self.process.exitcode != 0:
            tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if self.log.is_file() else []
            raise BoxmedError(f"training on the second core failed (exit code {self.process.exitcode}); its log "
                              f"{self.log} ends:\n" + "\n".join(tail)
                              + "\nFix the cause and rerun: finished stages resume.")


def _side_lane(jobs: list[tuple[str, Any]], rows: RowTraining, threads: int, log: str) -> None:
    import os
    import sys

    import torch

    handle = open(log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - the child's stdout/stderr until it exits
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    sys.stdout = sys.stderr = handle
    torch.set_num_threads(threads)
    for kind, job in jobs:
        started = time.perf_counter()
        if kind == "r2gen":
            from plugins.r2gen.train import train_r2gen

            train_r2gen(job)
        else:
            rows.train(job)
        print(f"[side lane] {'R2Gen' if kind == 'r2gen' else job[0]} trained in {time.perf_counter() - started:.0f} s",
              flush=True)


def _r2gen_finished(r2gen_dir: Path, epochs: int) -> bool:
    history = r2gen_dir / "history.jsonl"
    if not history.is_file():
        return False
    done = [json.loads(line).get("epoch", 0) for line in history.read_text(encoding="utf-8").splitlines() if line]
    return bool(done) and max(done) >= epochs


def _write(stem: Path, table: Any) -> None:
    for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        stem.with_suffix(f".{suffix}").write_text(table.render(fmt) + "\n", encoding="utf-8")


def measure_targets(out: Path, loaded: dict[str, Any], grounding: dict[str, Any], train_studies: list[Any],
                    test_studies: list[Any]) -> dict[str, Any]:
    """The numbers issue 16 asks for, each with whether its target is met."""
    constant = best_constant_report([s.findings for s in train_studies], [s.findings for s in test_studies])
    result: dict[str, Any] = {"best_constant_report": constant, "runs": {}}
    for name, run_data in loaded.items():
        result["runs"][name] = {k: run_data.summary.get(k) for k in ("chexpert_f1", "grounding_miou", "bleu_4")}
        result["runs"][name]["distinct_reports"] = distinct_reports(run_data.path)
    checks: list[dict[str, Any]] = []

    def check(name: str, value: Any, target: str, met: bool) -> None:
        checks.append({"target": name, "value": value, "needs": target, "met": bool(met)})

    runs = result["runs"]

    def above(value: float | None, bar: float | None) -> bool:  # a metric a run did not get counts as not met
        return value is not None and bar is not None and value > bar

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if "full" in runs:
        full, retrieval = runs["full"], runs["retrieval"]
        check("BoxMed-RL full CheXpert micro F1 > retrieval's", full["chexpert_f1"],
              f"> {shown(retrieval['chexpert_f1'])}", above(full["chexpert_f1"], retrieval["chexpert_f1"]))
        check("BoxMed-RL full CheXpert micro F1 > best constant report", full["chexpert_f1"],
              f"> {constant['chexpert_f1']:.4f}", above(full["chexpert_f1"], constant["chexpert_f1"]))
        # no predicted box at all: the grounding metric writes no mIoU; every reference box scores 0
        check("BoxMed-RL full grounding mIoU > retrieval's", full["grounding_miou"] or 0.0,
              f"> {shown(retrieval['grounding_miou'])}",
              above(full["grounding_miou"] or 0.0, retrieval["grounding_miou"]))
        check("BoxMed-RL full distinct reports", full["distinct_reports"], ">= 20", full["distinct_reports"] >= 20)
    if "mcl" in grounding and "svr" in grounding:
        gain = grounding["svr"]["mean_r_iou"] - grounding["mcl"]["mean_r_iou"]
        check("SVR - MCL mean R_IoU on test phrases", round(gain, 4),
              f">= 0.2 (MCL {grounding['mcl']['mean_r_iou']:.4f}, SVR {grounding['svr']['mean_r_iou']:.4f})",
              gain >= 0.2)
    if "full" in loaded and "wo_svr" in loaded:
        test = _wilcoxon_greater(_grounding_per_study(loaded["full"], test_studies),
                                 _grounding_per_study(loaded["wo_svr"], test_studies))
        result["wilcoxon_full_vs_wo_svr_grounding_miou"] = test
        check("full > w/o SVR on per-study grounding mIoU, one-tailed Wilcoxon p", test["p"], "< 0.01",
              test["p"] < 0.01)
    if "r2gen" in runs:
        check("R2Gen CheXpert micro F1 > best constant report", runs["r2gen"]["chexpert_f1"],
              f"> {constant['chexpert_f1']:.4f}", above(runs["r2gen"]["chexpert_f1"], constant["chexpert_f1"]))
        check("R2Gen distinct reports", runs["r2gen"]["distinct_reports"], ">= 10",
              runs["r2gen"]["distinct_reports"] >= 10)
    result["checks"] = checks
    return result


def render_targets(targets: dict[str, Any]) -> str:
    lines = ["| target | measured | needs | met |", "|---|---:|---|---|"]
    for c in targets["checks"]:
        value = f"{c['value']:.4f}" if isinstance(c["value"], float) else str(c["value"])
        lines.append(f"| {c['target']} | {value} | {c['needs']} | {'yes' if c['met'] else '**no**'} |")
    lines.append("")
    lines.append("| run | CheXpert micro F1 | grounding mIoU | BLEU-4 | distinct reports |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, r in targets["runs"].items():
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else "-" for k in ("chexpert_f1", "grounding_miou",
                                                                              "bleu_4")]
        lines.append(f"| {name} | {' | '.join(cells)} | {r['distinct_reports']} |")
    constant = targets["best_constant_report"]
    lines.append(f"| best constant report (of {constant['candidates']} train reports) | "
                 f"{constant['chexpert_f1']:.4f} | - | - | 1 |")
    if "total_seconds" in targets:
        lines.append(f"\ntotal time {targets['total_seconds']:.0f} s")
    return "\n".join(lines)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/paper-demo"),
              show_default=True)
@click.option("--base", default="small", show_default=True, help="Base preset or Qwen2-VL directory.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Pipeline config (default boxmed_model/configs/demo_cpu.toml).")
@click.option("--max-steps", type=int, default=None, help="Cap every BoxMed-RL stage (quick runs, tests).")
@click.option("--r2gen-epochs", type=int, default=None, help="Override the R2Gen demo preset's epochs.")
@click.option("--train-limit", type=int, default=None, help="First N training studies (quick runs).")
@click.option("--limit", "eval_limit", type=int, default=None, help="First N test studies (quick runs).")
@click.option("--rows", default=",".join(ROWS), show_default=True, help="Table-4 rows to train.")
@click.option("--no-r2gen", is_flag=True, help="Leave R2Gen out.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="torch CPU threads (1: on a shared CPU two threads wait on each other, ~10x slower here).")
def paper_demo_command(out: Path, base: str, config_file: str | None, max_steps: int | None,
                       r2gen_epochs: int | None, train_limit: int | None, eval_limit: int | None, rows: str,
                       no_r2gen: bool, threads: int) -> None:
    """The paper's experiments on the demo dataset on CPU: trains the Table-4 rows of BoxMed-RL and
    R2Gen, runs them and retrieval on demo/test, writes the leaderboard, Tables 3-4 (Wilcoxon
    stars), Figures 5-6 and the measured targets (boxmed_model/DEMO_RESULTS.md)."""
    paper_demo(out, base=base, config_file=config_file, max_steps=max_steps, r2gen_epochs=r2gen_epochs,
               train_limit=train_limit, eval_limit=eval_limit,
               rows=tuple(r.strip() for r in rows.split(",") if r.strip()), with_r2gen=not no_r2gen,
               threads=threads)


if __name__ == "__main__":
    paper_demo_command()
