"""The click group. Errors the user can fix (BoxmedError) print without a traceback."""

from __future__ import annotations

import logging
import sys

import click

from boxmed_eval import __version__
from boxmed_eval.errors import BoxmedError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except BoxmedError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            # A full or read-only disk, a path under a file: the system's reason and the path,
            # not a traceback.
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.secho(f"error: {where}{exc.strerror or exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="boxmed-eval")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Evaluation and benchmarking toolkit for chest X-ray radiology report generation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
