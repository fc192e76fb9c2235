"""The dataset adapter interface, its registry and the path-safety helpers."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from boxmed_eval.errors import DataError, MissingResourceError
from boxmed_eval.records import Study
from boxmed_eval.registry import Registry

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val", "dev": "val"}


def canonical_split(split: str) -> str:
    """'validate'/'valid'/'validation' -> 'val'; strips whitespace and lower-cases."""
    split = str(split).strip().lower()
    return _SPLIT_ALIASES.get(split, split)


def safe_join(root: str | os.PathLike[str], relative: str | os.PathLike[str], *, file: object = None,
              record: object = None) -> Path:
    """``root / relative``, refusing any path that lands outside ``root`` (``..`` segments,
    absolute paths). The check is lexical on purpose: a symlink the user placed inside the
    root (e.g. ``files/`` linked to another disk) is the user's choice and stays allowed,
    while a path written in an annotation file cannot climb out."""
    root_path = Path(os.path.abspath(root))
    candidate = Path(os.path.normpath(root_path / relative))
    if candidate != root_path and root_path not in candidate.parents:
        raise DataError(f"image path {str(relative)!r} escapes the data root {root_path}", file=file, record=record,
                        fix="image paths must be relative to the data root and stay inside it")
    return candidate


class DatasetAdapter(ABC):
    """Turns a dataset on disk into ``Study`` records of one split.

    Subclasses set ``description`` and ``needs`` (what the user must provide, shown by
    ``boxmed-eval datasets``) and ``env_var`` (where the data root may come from).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[str] = ""
    env_var: ClassVar[str | None] = None
    credentialed: ClassVar[bool] = False  # PhysioNet data: never send to third-party services
    # A high percentile of the findings length in words: report generators size their output
    # cap from it (None: unknown, the generator's own default applies).
    report_words: ClassVar[int | None] = None

    def __init__(self, data_root: str | os.PathLike[str] | None = None, *, check_images: bool = True,
                 **options: Any) -> None:
        self.data_root = self._resolve_root(data_root)
        self.check_images = check_images
        self.options = options
        self.dropped_empty = 0  # studies dropped because their findings were empty

    def _resolve_root(self, data_root: str | os.PathLike[str] | None) -> Path:
        if data_root is None and self.env_var:
            data_root = os.environ.get(self.env_var) or None
        if data_root is None:
            hint = f"--data-root PATH or set {self.env_var}" if self.env_var else "--data-root PATH"
            raise MissingResourceError(f"dataset {self.name!r} needs a data root: pass {hint}. Needs: {self.needs}")
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise MissingResourceError(f"dataset {self.name!r}: data root {root} does not exist or is not a folder. "
                                       f"Needs: {self.needs}")
        return root.resolve()

    @abstractmethod
    def load(self, split: str = "test") -> list[Study]:
        """All usable studies of ``split`` ('train', 'val' or 'test')."""

    # Helpers for subclasses ---------------------------------------------------------

    def image_path(self, relative: str, *, base: Path | None = None, file: object = None, record: object = None) -> str:
        """Absolute path of an image inside the data root; checks it exists when asked."""
        path = safe_join(base or self.data_root, relative, file=file, record=record)
        if path != self.data_root and self.data_root not in path.parents:
            raise DataError(f"image path {relative!r} escapes the data root {self.data_root}", file=file, record=record,
                            fix="image paths must stay inside the data root")
        if self.check_images and not path.is_file():
            raise DataError(f"image file not found: {path}", file=file, record=record,
                            fix="check --data-root points at the dataset's image folder (or pass check_images=False)")
        return str(path)

    def finish(self, studies: list[Study], split: str, *, source: object) -> list[Study]:
        """Drop studies with empty findings (counted in ``dropped_empty`` for this load, and
        logged) and reject duplicate ids."""
        self.dropped_empty = 0
        kept: list[Study] = []
        seen: set[str] = set()
        for study in studies:
            if not study.findings.strip():
                self.dropped_empty += 1
                continue
            if study.id in seen:
                raise DataError(f"duplicate study id {study.id!r} in split {split!r}", file=source,
                                record=study.id, fix="each study id must appear once per split")
            seen.add(study.id)
            kept.append(study)
        if self.dropped_empty:
            log.info("%s/%s: dropped %d studies with empty findings (kept %d)", self.name, split,
                     self.dropped_empty, len(kept))
        return kept

    @staticmethod
    def check_split(split: str) -> str:
        split = canonical_split(split)
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}", fix=f"use one of {', '.join(SPLITS)}")
        return split


DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset", package="boxmed_eval.datasets",
                                                    entry_point_group="boxmed_eval.datasets")


def get_dataset(name: str, data_root: str | os.PathLike[str] | None = None, **options: Any) -> DatasetAdapter:
    return DATASETS.get(name)(data_root, **options)
