"""Options shared by several commands."""

from __future__ import annotations

from typing import Any

import click

from boxmed_eval.errors import BoxmedError, MissingMetricsError
from boxmed_eval.plugins import parse_qualified_args


def metric_options_from_cli(pairs: tuple[str, ...], judge: tuple[str, ...] = (), judge_model: tuple[str, ...] = (),
                            allow_remote_phi: bool = False, trust_remote_code: bool = False) -> dict[str, dict[str, Any]]:
    """``--metric-option nlg.preprocess=none`` and the judge options -> {metric: {key: value}}."""
    options = parse_qualified_args(pairs, "--metric-option", "METRIC.KEY=VALUE", "nlg.preprocess=none")
    if judge or judge_model or allow_remote_phi or trust_remote_code:
        try:
            from boxmed_eval.judges import judge_options_from_cli
        except ImportError as exc:  # pragma: no cover - judges are part of the package
            raise BoxmedError(f"LLM judges are not available in this installation ({exc})") from None
        for metric, extra in judge_options_from_cli(list(judge), list(judge_model), allow_remote_phi=allow_remote_phi,
                                                    trust_remote_code=trust_remote_code).items():
            options.setdefault(metric, {}).update(extra)
    return options


def judge_options(func: Any) -> Any:
    """--judge / --judge-model / --allow-remote-phi / --trust-remote-code for GREEN and GEMA-Score."""
    func = click.option("--trust-remote-code", is_flag=True,
                        help="Allow a local judge model's custom code to run (off by default).")(func)
    func = click.option("--allow-remote-phi", is_flag=True,
                        help="Allow sending credentialed data (MIMIC-CXR and derivatives) to a non-loopback judge "
                             "server. Only with a data use agreement that permits it.")(func)
    func = click.option("--judge-model", multiple=True, metavar="[METRIC=]NAME",
                        help="Model name to request from the judge server (per metric: green=NAME).")(func)
    func = click.option("--judge", multiple=True, metavar="[METRIC=]PATH_OR_URL",
                        help="LLM judge for GREEN/GEMA-Score: a local model dir, an HF cache id, or the http:// base "
                             "URL of an OpenAI-compatible server (per metric: green=URL gema=PATH; RadFact's "
                             "entailment only when named: radfact=URL).")(func)
    return func


def print_summary(summary: dict[str, Any]) -> None:
    """The corpus metrics as a two-column table."""
    rows = [(k, v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in {"n_studies", "n_empty_predictions", "scoring_seconds"}]
    if not rows:
        click.echo("(no metrics computed)")
        return
    width = max(len(k) for k, _ in rows)
    click.echo(f"{'metric'.ljust(width)}  value")
    click.echo(f"{'-' * width}  ------")
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    for message in summary.get("messages", []):
        click.secho(f"note: {message}", fg="yellow", err=True)


def allow_missing_option(func: Any) -> Any:
    return click.option("--allow-missing-metrics", is_flag=True,
                        help="Exit 0 even when a metric asked for with --metrics or --judge could not be computed.")(func)


def requested_metrics(metrics_flag: str | None, metric_names: list[str], options: dict[str, dict[str, Any]]) -> list[str]:
    """The metric families the user asked for by name (--metrics) or by giving them a --judge;
    the default set without --metrics may skip what cannot run offline."""
    from boxmed_eval.judges import configured_judge_metrics

    asked = list(metric_names) if metrics_flag else []
    return asked + [m for m in configured_judge_metrics(options) if m not in asked]


def check_missing_metrics(summary: dict[str, Any], requested: list[str], allow_missing: bool) -> None:
    """Exit 3 (after the results are written) when a requested metric was skipped. A PHI-guard
    refusal always fails, whatever was asked for: nobody should read a quiet exit 0 as "judged"."""
    from boxmed_eval.judges.phi import PHI_REFUSAL_PREFIX

    skipped: dict[str, str] = summary.get("metrics_skipped") or {}
    refused = {m: r for m, r in skipped.items() if PHI_REFUSAL_PREFIX in r}
    missing = {m: r for m, r in skipped.items() if m in requested}
    if refused:
        raise MissingMetricsError(f"PHI guard: {'; '.join(f'{m}: {r}' for m, r in refused.items())}")
    if missing and not allow_missing:
        raise MissingMetricsError(
            f"requested metric(s) {', '.join(missing)} could not be computed ("
            + "; ".join(f"{m}: {r}" for m, r in missing.items())
            + "). The other results are written; pass --allow-missing-metrics to exit 0 anyway")
