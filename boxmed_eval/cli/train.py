"""``boxmed-eval train MODEL ...``: the training command a plugin offers (its
``training_command`` class attribute, a click command)."""

from __future__ import annotations

import click

from boxmed_eval.cli.app import main
from boxmed_eval.plugins import MODELS


class _PluginTrainingGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, cls in MODELS.items() if getattr(cls, "training_command", None) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        MODELS.discover()
        cls = MODELS._entries.get(name)
        return getattr(cls, "training_command", None) if cls is not None else None


@main.group("train", cls=_PluginTrainingGroup)
def train() -> None:
    """Train a model plugin that offers training (see `boxmed-eval models`)."""
