"""The ``boxmed-eval`` command line. One module per command (or command family) in this
package; each decorates its commands with ``@main.command(...)`` from ``cli.app``, and every
module here is imported when the CLI starts."""

from __future__ import annotations

import importlib
import pkgutil

from boxmed_eval.cli.app import main

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "app" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["main"]
