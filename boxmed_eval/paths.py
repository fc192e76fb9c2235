"""Where boxmed-eval keeps what it computes once and reuses (the demo dataset, preset models,
METEOR's paraphrase index, extracted RadGraph archives): one folder, ``$BOXMED_CACHE``
(default ``~/.cache/boxmed_eval``)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "BOXMED_CACHE"
# The name METEOR's and RadGraph's caches read before there was one variable; still honoured.
_OLD_CACHE_ENV = "BOXMED_EVAL_CACHE"


def cache_root() -> Path:
    """``$BOXMED_CACHE``, else the older ``$BOXMED_EVAL_CACHE``, else ``~/.cache/boxmed_eval``."""
    value = os.environ.get(CACHE_ENV) or os.environ.get(_OLD_CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "boxmed_eval"
