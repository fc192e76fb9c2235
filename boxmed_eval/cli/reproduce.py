"""``boxmed-eval reproduce TABLE ...``: a paper table in one command, offered by a model plugin
(its ``reproduce_commands`` class attribute: ``{name: click command}``), e.g. BoxMed-RL's
``table4`` / ``table5``."""

from __future__ import annotations

import click

from boxmed_eval.cli.app import main
from boxmed_eval.plugins import MODELS


def _commands() -> dict[str, click.Command]:
    MODELS.discover()
    found: dict[str, click.Command] = {}
    for name in MODELS.names():
        for table, command in (getattr(MODELS._entries.get(name), "reproduce_commands", None) or {}).items():
            found.setdefault(table, command)
    return found


class _ReproduceGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_commands())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _commands().get(name)


@main.group("reproduce", cls=_ReproduceGroup)
def reproduce() -> None:
    """Reproduce a paper table end to end: train, run, score, tabulate (e.g. `reproduce table4`)."""
