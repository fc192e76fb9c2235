"""Model plugins: one interface for every report generator, registered on the entry-point
group ``boxmed_eval.models`` (built-ins included, so a third-party plugin is a peer).

A third-party package adds, in its ``pyproject.toml``::

    [project.entry-points."boxmed_eval.models"]
    mymodel = "my_package.plugin:MyModel"

where ``MyModel`` subclasses ``ReportGenerator``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from boxmed_eval.errors import BoxmedError
from boxmed_eval.records import Prediction, Study
from boxmed_eval.registry import Registry

if TYPE_CHECKING:
    import click

    from boxmed_eval.datasets.base import DatasetAdapter
    from boxmed_eval.phrase_grounding import GroundingAnswer, GroundingQuery

ENTRY_POINT_GROUP = "boxmed_eval.models"


@dataclass
class RunContext:
    """What a plugin may use besides the studies it is asked to report on."""

    dataset: "DatasetAdapter | None" = None
    split: str = "test"
    out_dir: Path | None = None
    seed: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class ReportGenerator(ABC):
    """Turns a batch of studies into predictions.

    Class attributes shown by ``boxmed-eval models``: ``description`` and ``needs`` (weights,
    files, options). ``arguments`` documents the ``--model-arg`` keys. A plugin that can be
    trained sets ``training_command`` to a click command; ``boxmed-eval train NAME`` runs it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing"
    arguments: ClassVar[dict[str, str]] = {}
    training_command: ClassVar["click.Command | None"] = None

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.arguments))
        if unknown:
            valid = ", ".join(sorted(self.arguments)) or "(none)"
            raise BoxmedError(f"model {self.name!r} does not take --model-arg {', '.join(unknown)}; valid keys: {valid}")
        self.kwargs = kwargs

    def setup(self, context: RunContext) -> None:  # noqa: B027 - optional hook
        """Called once before generation (load weights, index a training split...)."""

    @abstractmethod
    def generate(self, studies: list[Study]) -> list[Prediction]:
        """One prediction per study, same ids (order free)."""

    def provenance(self) -> dict[str, Any]:
        """Facts recorded in run.json (weights paths, versions...)."""
        return {}

    def ground(self, queries: list["GroundingQuery"]) -> list["GroundingAnswer"]:
        """Optional: phrase grounding (``boxmed-eval run --task grounding``). For each query
        (an image and a phrase) the boxes where the phrase is seen, in pixels of the query's
        image, with ``Box.score`` when the model has a confidence; one answer per query, same
        ids. A plugin that does not override this cannot run the grounding task."""
        raise BoxmedError(f"model {self.name!r} has no ground() method (phrase grounding)")

    @classmethod
    def can_ground(cls) -> bool:
        return cls.ground is not ReportGenerator.ground


MODELS: Registry[type[ReportGenerator]] = Registry("model", entry_point_group=ENTRY_POINT_GROUP)


def get_model_class(name: str) -> type[ReportGenerator]:
    cls = MODELS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, ReportGenerator)):
        raise BoxmedError(f"entry point {name!r} of group {ENTRY_POINT_GROUP} is not a ReportGenerator subclass: {cls!r}")
    return cls


def parse_qualified_args(pairs: tuple[str, ...] | list[str], flag: str, form: str,
                         example: str) -> dict[str, dict[str, Any]]:
    """``["name.key=value", ...]`` -> {name: {key: value}} (values as in :func:`parse_model_args`),
    for ``--metric-option`` / ``--dataset-option``; ``form`` and ``example`` word the error."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        head, eq, value = pair.partition("=")
        name, dot, key = head.partition(".")
        if not eq or not dot or not key:
            raise BoxmedError(f"{flag} {pair!r} is not {form} (e.g. {example})")
        options.setdefault(name, {}).update(parse_model_args([f"{key}={value}"]))
    return options


def parse_model_args(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict; values parsed as JSON when they look like it (numbers,
    true/false, lists), else kept as strings."""
    args: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise BoxmedError(f"--model-arg {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip()
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args
