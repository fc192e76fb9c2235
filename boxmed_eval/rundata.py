"""Read a finished run directory (the format of ARCHITECTURE.md) for tables, tests and figures.

A run directory holds::

    run.json           model, model_args, dataset, split, data_root, seed, ...
    summary.json       flat {metric: corpus value} plus a "conventions" object
    scores.csv         column "id", then one column per per-sample metric
    per_class.csv      category, accuracy, precision, recall, f1, support  (optional)
    predictions.jsonl  id, report, optional reasoning, optional boxes      (optional)

Only what a caller asks for must exist: ``load_run(path)`` needs ``summary.json`` (a
leaderboard row), ``require_scores=True`` adds ``scores.csv`` (significance tests). Every
problem is a :class:`~boxmed_eval.errors.DataError` that names the file, the record and the fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.errors import DataError
from boxmed_eval.records import Prediction, iter_jsonl, read_json

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
SCORES_CSV = "scores.csv"
PER_CLASS_CSV = "per_class.csv"
PREDICTIONS_JSONL = "predictions.jsonl"

PER_CLASS_COLUMNS = ("category", "accuracy", "precision", "recall", "f1")

GREEN_CRITERIA: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("a", "(a) False report of a finding", ("green_false_finding", "green_a")),
    ("b", "(b) Missing a finding", ("green_missing_finding", "green_b")),
    ("c", "(c) Misidentified location", ("green_wrong_location", "green_c")),
    ("d", "(d) Misassessed severity", ("green_wrong_severity", "green_d")),
    ("e", "(e) Comparison not in reference", ("green_false_comparison", "green_e")),
    ("f", "(f) Omitted comparison", ("green_missing_comparison", "green_f")),
    ("matched", "Matched findings", ("green_matched",)),
)
"""GREEN's seven criteria: (key, label, accepted scores.csv column names, the GREEN metric's
own name first, ``green_a`` .. ``green_f`` also accepted). The first six count clinically
significant errors per study (lower is better); the last counts matched findings (higher is
better)."""

_PRODUCE_FIX = "produce it with `boxmed-eval run ... --out DIR` or `boxmed-eval score ... --out DIR`"


@dataclass
class RunData:
    """The contents of one run directory.

    ``summary``: corpus value of each metric (numbers only; ``conventions`` kept apart).
    ``scores``: per-sample scores, index = study id (str), one float column per metric (NaN
    where a sample has no score). ``per_class``: Table 3 rows, or None when the run has none.
    """

    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    summary_extra: dict[str, Any] = field(default_factory=dict)  # n_studies, messages, ...
    scores: pd.DataFrame | None = None
    per_class: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        """What tables call the run: run.json's ``name``, else the directory name."""
        name = self.info.get("name")
        return str(name) if name else self.path.name

    @property
    def dataset(self) -> str | None:
        value = self.info.get("dataset")
        return str(value) if value else None

    @property
    def model(self) -> str | None:
        value = self.info.get("model")
        return str(value) if value else None

    def require_scores(self) -> pd.DataFrame:
        if self.scores is None:
            raise DataError("no per-sample scores (scores.csv is missing)", file=self.path / SCORES_CSV,
                            fix="significance tests pair per-sample scores by study id; " + _PRODUCE_FIX)
        return self.scores

    def require_per_class(self) -> pd.DataFrame:
        if self.per_class is None:
            raise DataError("no per-class CheXpert table (per_class.csv is missing)", file=self.path / PER_CLASS_CSV,
                            fix="score the run with the CheXpert metric family, e.g. "
                                "`boxmed-eval score --run DIR --metrics chexpert`")
        return self.per_class

    def per_sample(self, metric: str) -> pd.Series:
        """Per-sample scores of one metric, indexed by study id."""
        scores = self.require_scores()
        if metric not in scores.columns:
            raise DataError(f"no per-sample column {metric!r}", file=self.path / SCORES_CSV,
                            fix=f"columns present: {', '.join(scores.columns) or '(none)'}; "
                                f"add the metric with `boxmed-eval score --run DIR --metrics ...`")
        return scores[metric]

    def predictions(self) -> dict[str, Prediction]:
        """``{id: Prediction}`` from predictions.jsonl (reports, reasoning, boxes)."""
        return read_predictions(self.path / PREDICTIONS_JSONL)


def load_run(path: str | os.PathLike[str], *, require_scores: bool = False,
             require_per_class: bool = False) -> RunData:
    """Load a run directory. ``summary.json`` must exist; ``scores.csv`` / ``per_class.csv``
    are read when present and required only when asked."""
    path = Path(path)
    if not path.exists():
        raise DataError("run directory not found", file=path, fix="check the path; " + _PRODUCE_FIX)
    if not path.is_dir():
        raise DataError("not a directory (expected a run directory)", file=path,
                        fix="pass the folder that holds run.json, summary.json and scores.csv")
    run = RunData(path=path)
    if (path / RUN_JSON).exists():
        info = _read_json_object(path / RUN_JSON)
        run.info = info
    summary_path = path / SUMMARY_JSON
    if not summary_path.exists():
        present = ", ".join(sorted(p.name for p in path.iterdir())) or "(empty)"
        raise DataError(f"summary.json is missing (the folder holds: {present})", file=path,
                        fix="is the run finished? " + _PRODUCE_FIX)
    run.summary, run.conventions, run.summary_extra = _read_summary(summary_path)
    scores_path = path / SCORES_CSV
    if scores_path.exists():
        run.scores = read_scores(scores_path)
    elif require_scores:
        run.require_scores()
    per_class_path = path / PER_CLASS_CSV
    if per_class_path.exists():
        run.per_class = read_per_class(per_class_path)
    elif require_per_class:
        run.require_per_class()
    return run


def _read_json_object(path: Path) -> dict[str, Any]:
    data = read_json(path, fix="the file was not written completely; re-run the command that produced it")
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", file=path)
    return data


NON_METRIC_KEYS = frozenset({"conventions", "messages", "n_studies"})
"""summary.json entries that are bookkeeping, not metrics."""


def _is_count_key(key: str) -> bool:
    # Counts and timings written beside the metrics (n_studies, scoring_seconds, ...).
    return key.startswith("n_") or key.endswith(("_count", "_failures", "_seconds"))


def _read_summary(path: Path) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    data = _read_json_object(path)
    conventions = data.get("conventions") or {}
    if not isinstance(conventions, dict):
        raise DataError("'conventions' must be an object", file=path)
    summary: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in NON_METRIC_KEYS or _is_count_key(key):
            extra[key] = value
            continue
        if value is None:  # a metric that could not be computed
            summary[key] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            extra[key] = value  # notes, nested objects: not metrics
        else:
            summary[key] = float(value)
    return summary, conventions, extra


def read_scores(path: str | os.PathLike[str]) -> pd.DataFrame:
    """scores.csv -> DataFrame indexed by study id (str), float columns."""
    path = Path(path)
    try:
        # Everything as text, nothing read as missing: ids such as "NA", "nan", "null" or "None"
        # are study ids, not gaps. Scores are converted below ("" and "nan" mean no score).
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({exc})", file=path, fix="re-score the run to rewrite scores.csv") from None
    except pd.errors.EmptyDataError:
        raise DataError("empty file", file=path, fix="re-score the run to rewrite scores.csv") from None
    if "id" not in frame.columns:
        raise DataError(f"no 'id' column (columns: {', '.join(map(str, frame.columns))})", file=path,
                        fix="scores.csv needs a first column 'id' with the study ids")
    missing_id = frame["id"].str.strip() == ""
    if missing_id.any():
        row = int(np.flatnonzero(missing_id.to_numpy())[0]) + 2
        raise DataError("empty study id", file=path, record=f"row {row}", fix="every row needs its study id")
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        first = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"duplicate id {frame['id'].iloc[first]!r}", file=path, record=f"row {first + 2}",
                        fix="each study must appear once; re-score the run")
    frame = frame.set_index("id")
    for column in frame.columns:
        text = frame[column].str.strip()
        no_score = text.str.lower().isin({"", "nan"})
        converted = pd.to_numeric(text.where(~no_score, "nan"), errors="coerce")
        bad = converted.isna() & ~no_score
        if bad.any():
            study = bad.index[np.flatnonzero(bad.to_numpy())[0]]
            raise DataError(f"column {column!r} holds a non-number {frame[column][study]!r}", file=path,
                            record=f"id {study}", fix="per-sample scores must be numbers (empty for no score)")
        frame[column] = converted.astype(float)
    return frame


def read_per_class(path: str | os.PathLike[str]) -> pd.DataFrame:
    """per_class.csv -> DataFrame indexed by CheXpert category name."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({exc})", file=path, fix="re-score the run with the CheXpert metric") from None
    missing = [c for c in PER_CLASS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {', '.join(missing)}", file=path,
                        fix=f"per_class.csv needs the columns {', '.join(PER_CLASS_COLUMNS)} (and optionally support)")
    if frame["category"].duplicated().any():
        raise DataError(f"duplicate category {frame['category'][frame['category'].duplicated()].iloc[0]!r}", file=path)
    frame = frame.set_index("category")
    for column in frame.columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def read_predictions(path: str | os.PathLike[str]) -> dict[str, Prediction]:
    """predictions.jsonl -> ``{id: Prediction}``; errors name the line."""
    path = Path(path)
    if not path.exists():
        raise DataError("predictions.jsonl is missing", file=path, fix=_PRODUCE_FIX)
    predictions: dict[str, Prediction] = {}
    for number, obj in iter_jsonl(path):
        if "id" not in obj or "report" not in obj:
            raise DataError("needs 'id' and 'report'", file=path, record=f"line {number}")
        try:
            prediction = Prediction.from_dict(obj)
        except (TypeError, ValueError) as exc:
            raise DataError(f"bad prediction ({exc})", file=path, record=f"line {number}",
                            fix="boxes need numeric x1, y1, x2, y2 with x2 >= x1 and y2 >= y1") from None
        if prediction.id in predictions:
            raise DataError(f"duplicate id {prediction.id!r}", file=path, record=f"line {number}")
        predictions[prediction.id] = prediction
    return predictions
