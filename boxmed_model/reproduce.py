"""``boxmed-eval reproduce table4|table5``: the paper's ablation tables in one command.

For every row of the shipped spec (``benchmarks/ablations/table4.toml`` / ``table5.toml``) it
trains the variant, runs it on the test split and scores it, then renders the table with
one-tailed Wilcoxon stars (Markdown, LaTeX and CSV) through ``boxmed_eval.tables``::

    OUT/train/<row>/          a `boxmed-eval train boxmedrl` output per row (boxmedrl.json)
    OUT/runs/<row>/           a `boxmed-eval run` directory per row (predictions, scores)
    OUT/<table>.{md,tex,csv}  the table; OUT/<table>.toml the spec it was rendered from

Stages are shared where rows coincide (Table 4: the MCL weights of ``full`` serve ``wo_svr``;
Table 5: every strategy adapts the same MCL -> SVR model), and everything resumes: a rerun
skips finished stages and finished predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from boxmed_eval.errors import BoxmedError

log = logging.getLogger(__name__)

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "ablations"


def _spec(name: str) -> Path:
    path = SPECS / f"{name}.toml"
    if not path.is_file():
        raise BoxmedError(f"the {name} spec is not at {path}: run from a source checkout of boxmed-eval")
    return path


def plan_table4(rows: list[str]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(row, config overrides, shared stages as {stage: row that trains it}) in training order."""
    order = ["full", "wo_svr", "wo_mcl", "wo_mcl_svr"]
    unknown = sorted(set(rows) - set(order))
    if unknown:
        raise BoxmedError(f"table4 spec rows {unknown} are not Table-4 ablations ({', '.join(order)})")
    return [(row, {"ablation": row}, {"mcl": "full"} if row == "wo_svr" and "full" in rows else {})
            for row in order if row in rows]


def plan_table5(rows: list[str]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    from boxmed_model.config import STRATEGIES

    strategy = {row: row.replace("_adapter", "+adapter") for row in rows}
    bad = sorted(r for r, s in strategy.items() if s not in STRATEGIES)
    if bad:
        raise BoxmedError(f"table5 spec rows {bad} are not Table-5 strategies ({', '.join(STRATEGIES)})")
    first = "adapter" if "adapter" in rows else rows[0]
    ordered = [first] + [r for r in rows if r != first]
    return [(row, {"strategy": strategy[row]}, {} if row == first else {"mcl": first, "svr": first})
            for row in ordered]


def reproduce(table: str, *, base: str, wiring: Any, out: Path, config_file: str | None = None,
              max_steps: int | None = None, num_generations: int | None = None, train_limit: int | None = None,
              eval_limit: int | None = None, metrics: list[str] | None = None,
              model_args: dict[str, Any] | None = None, batch_size: int = 8) -> dict[str, Path]:
    """Train, run and score every row of ``table`` (table4 / table5), then write the table."""
    from dataclasses import replace

    from boxmed_eval.evaluation import RunConfig, run
    from boxmed_eval.tables import AblationSpec, ablation_table
    from boxmed_model.plugin import build_config, train_from_wiring

    if not wiring.dataset:
        raise BoxmedError("reproduce needs --dataset (the report dataset the rows are trained and tested on)")
    spec_path = _spec(table)
    spec = AblationSpec.from_toml(spec_path, runs_root=out / "runs")
    rows = [row.run.name for row in spec.rows]
    plan = plan_table4(rows) if table == "table4" else plan_table5(rows)
    cfg0 = build_config(config_file, None, None, max_steps, num_generations)
    for row, overrides, shared_from in plan:  # train every row first: all refusals come before any run
        cfg = replace(cfg0, **overrides)
        shared = {stage: str(out / "train" / source / stage / "final") for stage, source in shared_from.items()}
        click.echo(f"[{table}] training {row} ({', '.join(f'{k}={v}' for k, v in overrides.items())}"
                   + (f"; shares {', '.join(shared)} with {', '.join(sorted(set(shared_from.values())))}" if shared
                      else "") + ")")
        train_from_wiring("all", base, cfg, wiring, out / "train" / row, limit=train_limit, shared=shared,
                          base_dir=out / "train")
    for row, overrides, _ in plan:
        click.echo(f"[{table}] generating and scoring {row} on {wiring.dataset}/test")
        args = {"weights": str(out / "train" / row), **overrides, **(model_args or {})}
        _follow_move(out / "runs" / row, args["weights"], row)
        run(RunConfig(model="boxmedrl", dataset=wiring.dataset, split="test", data_root=wiring.root(wiring.dataset),
                      dataset_options=wiring.options.get(wiring.dataset, {}), model_args=args,
                      out=str(out / "runs" / row), limit=eval_limit, batch_size=batch_size, metrics=metrics))
    # Only the metrics that could be computed here (GREEN / GEMA-Score need --judge).
    from boxmed_eval.rundata import load_run

    loaded = [load_run(r.run, require_scores=True) for r in spec.rows]
    available = set.intersection(*(set(run.require_scores().columns) & set(run.summary) for run in loaded))
    dropped = [m for m in spec.metrics if m not in available]
    spec.metrics = [m for m in spec.metrics if m in available]
    if not spec.metrics:
        raise BoxmedError(f"none of the {table} metrics ({', '.join(dropped)}) were computed")
    if dropped:
        click.secho(f"note: {', '.join(dropped)} not computed (judge metrics need --judge); left out of the table",
                    fg="yellow", err=True)
    table_obj = ablation_table(spec)
    written = {}
    for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        path = out / f"{table}.{suffix}"
        path.write_text(table_obj.render(fmt) + "\n", encoding="utf-8")
        written[fmt] = path
    click.echo(written["markdown"].read_text(encoding="utf-8"))
    return written


def _follow_move(run_out: Path, weights: str, row: str) -> None:
    """After ``--out`` was moved, a row's ``run.json`` still names its weights at the old place,
    and ``run`` would refuse the directory as another run's. When that old place is gone and
    was this row's ``train/<row>`` too, point the record at the new place (same weights)."""
    from boxmed_eval.runs import RunDirectory

    run_dir = RunDirectory(run_out)
    config = run_dir.read_config()
    old = ((config or {}).get("model_args") or {}).get("weights")
    if not old or old == weights or Path(old).exists():
        return
    if Path(old).parts[-2:] != ("train", row):
        return
    log.info("%s: weights moved from %s to %s", run_out, old, weights)
    config["model_args"] = {**config["model_args"], "weights": weights}
    run_dir.write_config(config)


def _command(table: str, doc: str) -> click.Command:
    @click.command(table, help=doc)
    @click.option("--base", required=True, help="tiny / small preset, a Qwen2-VL directory or HF id "
                  "(Qwen/Qwen2-VL-2B-Instruct).")
    @click.option("--pretrain-dataset", multiple=True, metavar="NAME",
                  help="Box-sentence set(s) for MCL and SVR (paper: ms_cxr and latte_cxr).")
    @click.option("--dataset", required=True, help="Report dataset for the adapter and the test split (mimic).")
    @click.option("--data-root", multiple=True, metavar="[NAME=]PATH")
    @click.option("--dataset-option", multiple=True, metavar="NAME.KEY=VALUE")
    @click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False, exists=True))
    @click.option("--max-steps", type=int, default=None, help="Cap every stage at N steps (quick runs).")
    @click.option("--num-generations", type=int, default=None)
    @click.option("--train-limit", type=int, default=None, help="First N training studies of each dataset.")
    @click.option("--limit", type=int, default=None, help="First N studies of the test split.")
    @click.option("--metrics", default="nlg,chexpert", show_default=True,
                  help="Metric families (add green,gema with --judge via `boxmed-eval score --run`).")
    @click.option("--model-arg", multiple=True, metavar="KEY=VALUE", help="Plugin argument for every row.")
    @click.option("--batch-size", type=int, default=8, show_default=True)
    def command(base: str, pretrain_dataset: tuple[str, ...], dataset: str, data_root: tuple[str, ...],
                dataset_option: tuple[str, ...], out: Path, config_file: str | None, max_steps: int | None,
                num_generations: int | None, train_limit: int | None, limit: int | None, metrics: str,
                model_arg: tuple[str, ...], batch_size: int) -> None:
        from boxmed_eval.metrics.base import resolve_metric_names
        from boxmed_eval.plugins import parse_model_args
        from boxmed_model.plugin import parse_wiring

        wiring = parse_wiring(pretrain_dataset, dataset, data_root, dataset_option)
        reproduce(table, base=base, wiring=wiring, out=out, config_file=config_file, max_steps=max_steps,
                  num_generations=num_generations, train_limit=train_limit, eval_limit=limit,
                  metrics=resolve_metric_names(metrics), model_args=parse_model_args(model_arg),
                  batch_size=batch_size)

    return command


REPRODUCE_COMMANDS = {
    "table4": _command("table4", "Table 4 (component ablation): train w/o MCL & SVR, w/o SVR, w/o MCL and the full "
                                 "BoxMed-RL, run each on the test split, score, write the table with Wilcoxon stars."),
    "table5": _command("table5", "Table 5 (adaptation strategies): one shared MCL -> SVR model, one adaptation per "
                                 "strategy, run, score, write the table with Wilcoxon stars."),
}
