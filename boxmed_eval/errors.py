"""User-facing errors: each names the file, the record and the fix."""

from __future__ import annotations


class BoxmedError(Exception):
    """Base class for errors the CLI prints without a traceback."""

    exit_code: int = 2  # what the CLI exits with


class MissingMetricsError(BoxmedError):
    """Results were written, but a metric the user asked for could not be computed."""

    exit_code = 3


class DataError(BoxmedError, ValueError):
    """Bad input data. The message says where (file, record) and how to fix it."""

    def __init__(self, problem: str, *, file: object | None = None, record: object | None = None,
                 fix: str | None = None) -> None:
        parts = []
        if file is not None:
            parts.append(f"{file}")
        if record is not None:
            text = str(record)
            parts.append(text if text.split(" ", 1)[0] in {"line", "row", "item", "entry"} else f"record {text}")
        where = ": ".join(parts)
        message = f"{where}: {problem}" if where else problem
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)
        self.problem = problem
        self.file = file
        self.record = record
        self.fix = fix


class UnknownNameError(BoxmedError, KeyError):
    """An unknown registry name; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        message = f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid)) or '(none)'}"
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class MissingResourceError(BoxmedError):
    """Something a metric/model/dataset needs is not available offline: says what to pass."""
