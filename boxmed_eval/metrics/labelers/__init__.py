"""CheXpert labelers: turn report text into the 14 CheXpert observation labels.

A labeler returns, for each report, ``{class name: 1 | 0 | -1 | None}`` over
``boxmed_eval.records.CHEXPERT_CLASSES`` (1 positive, 0 negative, -1 uncertain, None blank =
not mentioned). Labelers register in ``LABELERS``; ``get_labeler(name, **options)`` builds one.

- ``rules`` (default, offline, no model): ``boxmed_eval.metrics.labelers.rules``.
- ``chexbert``: CheXbert inference on transformers, needs ``chexbert.pth``
  (``boxmed_eval.metrics.labelers.chexbert``).

Modules here must stay cheap to import (no torch at import time): the metric registry
imports this package whenever it lists metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from boxmed_eval.records import CHEXPERT_CLASSES
from boxmed_eval.registry import Registry

Labels = dict[str, int | None]
"""One report's labels: ``{class name: 1 / 0 / -1 / None}`` for the 14 CheXpert classes."""


class Labeler(ABC):
    """Labels reports with the 14 CheXpert observations."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing"

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def label(self, reports: list[str]) -> list[Labels]:
        """One ``{class: 1/0/-1/None}`` dict (all 14 classes as keys) per report, in order."""

    def describe(self) -> dict[str, Any]:
        """What to record in a run's conventions (name and the settings that change labels)."""
        return {"labeler": self.name}


LABELERS: Registry[type[Labeler]] = Registry("labeler", package="boxmed_eval.metrics.labelers",
                                             entry_point_group="boxmed_eval.labelers")


def get_labeler(name: str = "rules", **options: Any) -> Labeler:
    """Build the labeler registered as ``name`` (``rules`` or ``chexbert``) with ``options``."""
    return LABELERS.get(name)(**options)


def blank_labels() -> Labels:
    return {c: None for c in CHEXPERT_CLASSES}


__all__ = ["LABELERS", "Labeler", "Labels", "blank_labels", "get_labeler"]
