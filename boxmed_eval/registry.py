"""A tiny name -> class registry, shared by datasets, metrics and labelers.

Modules of a package register themselves with the ``register`` decorator; ``discover``
imports every module of the package once so that adding a file is all it takes to add an
entry. Third parties use entry points (see ``boxmed_eval.plugins``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from boxmed_eval.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self.failures: dict[str, str] = {}  # entry points that failed to load: name -> error
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            try:
                setattr(obj, "name", name)
            except (AttributeError, TypeError):
                pass
            return obj
        return decorator

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.package:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        if self.entry_point_group:
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.entry_point_group):
                if ep.name not in self._entries:
                    try:
                        obj = ep.load()
                    except Exception as exc:  # a broken plugin must not hide the others
                        self.failures[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
                        continue
                    if not getattr(obj, "name", ""):
                        try:
                            setattr(obj, "name", ep.name)
                        except (AttributeError, TypeError):
                            pass
                    self._entries[ep.name] = obj

    def get(self, name: str) -> T:
        self.discover()
        if name in self.failures:
            from boxmed_eval.errors import BoxmedError

            raise BoxmedError(f"{self.kind} {name!r} is registered but failed to load: {self.failures[name]}")
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.discover()
        return sorted(self._entries.items())
