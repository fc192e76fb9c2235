"""Agreement of a labeler with expected CheXpert labels (for the labeler evaluation set).

Per observation, each report's label is one of four outcomes: positive (1), negative (0),
uncertain (-1) or blank (None). The per-observation score is the macro F1 over those four
outcomes (sklearn ``f1_score(average="macro")`` restricted to the outcomes that occur in the
expected or predicted labels of that observation), and the overall figure is the mean of the
14 per-observation scores ("macro F1"). Per-observation accuracy (exact 4-way match) is
reported too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from boxmed_eval.errors import DataError
from boxmed_eval.metrics.labelers import Labels
from boxmed_eval.records import CHEXPERT_CLASSES

_CODE = {1: "positive", 0: "negative", -1: "uncertain", None: "blank"}


@dataclass
class Agreement:
    macro_f1: float
    mean_accuracy: float
    per_class: dict[str, dict[str, float]]  # class -> {"f1": ..., "accuracy": ..., "n_mentioned": ...}
    exact_reports: float  # share of reports whose 14 labels all match

    def table(self) -> str:
        lines = [f"{'observation':28s} {'4-way F1':>8s} {'accuracy':>8s} {'mentioned':>9s}"]
        for name, row in self.per_class.items():
            lines.append(f"{name:28s} {row['f1']:8.3f} {row['accuracy']:8.3f} {int(row['n_mentioned']):9d}")
        lines.append(f"{'macro':28s} {self.macro_f1:8.3f} {self.mean_accuracy:8.3f}")
        lines.append(f"reports with all 14 labels right: {self.exact_reports:.3f}")
        return "\n".join(lines)


def agreement(expected: list[Labels], predicted: list[Labels]) -> Agreement:
    """Four-outcome agreement between ``expected`` and ``predicted`` labels (same order)."""
    from sklearn.metrics import f1_score

    if len(expected) != len(predicted):
        raise ValueError(f"{len(expected)} expected vs {len(predicted)} predicted label sets")
    per_class: dict[str, dict[str, float]] = {}
    for name in CHEXPERT_CLASSES:
        y_true = [_CODE[e.get(name)] for e in expected]
        y_pred = [_CODE[p.get(name)] for p in predicted]
        outcomes = sorted(set(y_true) | set(y_pred))
        f1 = float(f1_score(y_true, y_pred, labels=outcomes, average="macro", zero_division=0))
        accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / max(len(y_true), 1)
        per_class[name] = {"f1": f1, "accuracy": accuracy, "n_mentioned": float(sum(t != "blank" for t in y_true))}
    exact = sum(all(e.get(c) == p.get(c) for c in CHEXPERT_CLASSES) for e, p in zip(expected, predicted))
    return Agreement(
        macro_f1=sum(r["f1"] for r in per_class.values()) / len(per_class),
        mean_accuracy=sum(r["accuracy"] for r in per_class.values()) / len(per_class),
        per_class=per_class,
        exact_reports=exact / max(len(expected), 1),
    )


def read_eval_set(path: str | Path) -> tuple[list[str], list[Labels], list[dict]]:
    """Reports, expected labels and the raw rows of a labeler evaluation set (JSONL with
    ``report`` and ``labels`` = ``{class: 1/0/-1/null}``; a missing class is blank)."""
    path = Path(path)
    reports, labels, rows = [], [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, expected = row["report"], row["labels"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"bad evaluation-set row ({exc})", file=path, record=f"line {number}",
                                fix='each line: {"report": "...", "labels": {"Cardiomegaly": 1, ...}}') from None
            unknown = set(expected) - set(CHEXPERT_CLASSES)
            if unknown:
                raise DataError(f"unknown classes {sorted(unknown)}", file=path, record=f"line {number}")
            reports.append(text)
            labels.append({c: expected.get(c) for c in CHEXPERT_CLASSES})
            rows.append(row)
    return reports, labels, rows
