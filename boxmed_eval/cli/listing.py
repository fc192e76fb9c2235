"""``boxmed-eval models | datasets | metrics``: what is registered and what each needs."""

from __future__ import annotations

import textwrap

import click

from boxmed_eval.cli.app import main


def _entry(name: str, lines: list[tuple[str, str]]) -> None:
    click.secho(name, bold=True)
    for label, text in lines:
        if text:
            wrapped = textwrap.fill(text, width=96, initial_indent="    ", subsequent_indent="    ")
            click.echo(f"  {label}:\n{wrapped}")


@main.command("models")
def models_command() -> None:
    """List model plugins (entry-point group boxmed_eval.models) and what each needs."""
    from boxmed_eval.plugins import MODELS

    for name, cls in MODELS.items():
        args = "; ".join(f"{k}: {v}" for k, v in getattr(cls, "arguments", {}).items())
        trains = "yes (boxmed-eval train " + name + ")" if getattr(cls, "training_command", None) else "no"
        grounds = "yes (run --task grounding)" if getattr(cls, "can_ground", lambda: False)() else "no"
        _entry(name, [("what", cls.description), ("needs", cls.needs), ("--model-arg", args), ("training", trains),
                      ("phrase grounding", grounds)])
    for name, error in sorted(MODELS.failures.items()):
        _entry(name, [("BROKEN", error)])


@main.command("datasets")
def datasets_command() -> None:
    """List dataset adapters and what each needs."""
    from boxmed_eval.datasets import DATASETS

    for name, cls in DATASETS.items():
        extra = "credentialed (PhysioNet): never sent to third-party services" if cls.credentialed else ""
        _entry(name, [("what", cls.description), ("needs", cls.needs), ("note", extra)])


@main.command("metrics")
def metrics_command() -> None:
    """List metric families, the metric names they write, and whether they can run here."""
    from boxmed_eval.metrics import METRICS

    for name, cls in METRICS.items():
        try:
            ok, reason = cls().available()
        except Exception as exc:  # listing must never crash on one broken metric
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        status = "available" if ok else f"UNAVAILABLE: {reason}"
        default = " (default)" if cls.default else ""
        _entry(name + default, [("what", cls.description), ("writes", ", ".join(cls.provides)),
                                ("needs", cls.needs), ("status", status)])
