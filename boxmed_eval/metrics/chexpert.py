"""CheXpert clinical efficacy (CE): the 14 CheXpert labels of each generated report compared
with those of its reference report, both labelled by the same labeler (option ``labeler``:
``rules``, the default, or ``chexbert``).

Conventions (each has its own names; a table must say which it reports):

- ``chexpert_precision`` / ``chexpert_recall`` / ``chexpert_f1``: R2Gen family (the paper's
  tables). A label counts as positive only when it is 1; uncertain, negative and blank are 0.
  sklearn ``precision_recall_fscore_support(average="micro", zero_division=0)`` over the 14
  columns (computed in numpy; equal to sklearn, see the tests).
- ``chexpert_macro_precision`` / ``_recall`` / ``_f1``: the same binarisation, ``average="macro"``
  (unweighted mean over the 14 classes; a class without positives on either side scores 0).
- ``chexpert_example_precision`` / ``_recall`` / ``_f1``: PromptMRG's example-based scores:
  positives only, precision/recall/F1 computed per report over its 14 labels, then averaged over
  reports; 0/0 counts as 0 (so a report pair with no positive on either side scores 0).
- ``rrg_14_micro_f1`` / ``rrg_14_macro_f1`` / ``rrg_5_micro_f1`` / ``rrg_5_macro_f1``:
  f1chexbert / RadEval "rrg" convention: uncertain counts as positive (1 or -1 -> 1); micro/macro
  F1 over the 14 classes, and over the 5 classes Cardiomegaly, Edema, Consolidation, Atelectasis,
  Pleural Effusion. With ``labeler=chexbert`` the same numbers are also written under
  f1chexbert's own names ``chexbert_14_micro_f1`` ... ``chexbert_5_macro_f1``; with another
  labeler those names are *not* written, so that no number claims CheXbert when it did not run.
  ``chexpert_labeler`` and one convention entry per name are recorded in the conventions.

References are labelled by the same labeler from their text (option ``reference_labels=labeler``,
the R2Gen way); ``reference_labels=dataset`` uses each study's own CheXpert labels instead
(e.g. MIMIC-CXR's ``mimic-cxr-2.0.0-chexpert.csv``).

Per-sample scores (for paired tests between runs on the same studies): per study, the
example-based ``chexpert_example_precision`` / ``_recall`` / ``_f1`` (R2Gen binarisation: 1 is
positive). Their means are the corpus example-based figures. The micro P/R/F1 are corpus statistics:
``chexpert_tp`` / ``chexpert_fp`` / ``chexpert_fn`` (per study, over the 14 classes, R2Gen
binarisation) are written per sample so that ``compare --test bootstrap|randomization``
recomputes the corpus micro value from their sums in every resample (``boxmed_eval.stats``).

Tables: ``per_class`` (the paper's Table 3, R2Gen binarisation: category, accuracy, precision,
recall, f1, support = number of references with the class positive) and ``chexpert_labels``
(id, side = reference / prediction, the 14 labels as 1 / 0 / -1 / blank).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.metrics.labelers import Labels, get_labeler
from boxmed_eval.records import CHEXPERT_CLASSES, Prediction, Study

FIVE_CLASSES: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

# Options the harness passes to every metric that this one does not use.
_HARNESS_OPTIONS = {"cache_dir", "dataset"}


def binarize(labels: list[Labels], *, uncertain_positive: bool, classes: tuple[str, ...] = CHEXPERT_CLASSES) -> np.ndarray:
    """Reports x classes 0/1 matrix: 1 where the label is 1 (or -1 when ``uncertain_positive``)."""
    positive = (1, -1) if uncertain_positive else (1,)
    return np.array([[int(row.get(c) in positive) for c in classes] for row in labels], dtype=np.int64).reshape(
        len(labels), len(classes))


def example_based(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-report precision, recall and F1 over the label columns; 0/0 -> 0 (PromptMRG)."""
    tp = (y_true & y_pred).sum(axis=1).astype(float)
    fp = ((1 - y_true) & y_pred).sum(axis=1).astype(float)
    fn = (y_true & (1 - y_pred)).sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


def _safe_divide(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> tuple[float, float, float]:
    """sklearn ``precision_recall_fscore_support(average=micro|macro, zero_division=0)`` for 0/1
    matrices, in numpy (sklearn's import alone costs seconds; tests prove the equality)."""
    tp = (y_true & y_pred).sum(axis=0).astype(float)
    fp = ((1 - y_true) & y_pred).sum(axis=0).astype(float)
    fn = (y_true & (1 - y_pred)).sum(axis=0).astype(float)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    elif average != "macro":
        raise ValueError(f"average must be micro or macro, not {average!r}")
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)  # = 2PR/(P+R), and 0 where tp = 0
    return float(np.mean(precision)), float(np.mean(recall)), float(np.mean(f1))


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...] = CHEXPERT_CLASSES) -> pd.DataFrame:
    """Table 3: per class accuracy, precision, recall, F1 (binary, positive = 1) and support."""
    rows = []
    for j, name in enumerate(classes):
        precision, recall, f1 = precision_recall_f1(y_true[:, j:j + 1], y_pred[:, j:j + 1], "micro")
        accuracy = float((y_true[:, j] == y_pred[:, j]).mean()) if len(y_true) else 0.0
        rows.append({"category": name, "accuracy": accuracy,
                     "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(y_true[:, j].sum())})
    return pd.DataFrame(rows, columns=["category", "accuracy", "precision", "recall", "f1", "support"])


def ce_scores(reference_labels: list[Labels], predicted_labels: list[Labels], *,
              labeler: str = "rules") -> dict[str, float]:
    """Every corpus CE figure (see the module docstring) from two lists of label dicts.

    ``labeler`` names the labeler that made the labels: only ``chexbert`` adds the ``chexbert_*``
    names."""
    scores: dict[str, float] = {}
    y_true = binarize(reference_labels, uncertain_positive=False)
    y_pred = binarize(predicted_labels, uncertain_positive=False)
    for average, prefix in (("micro", "chexpert"), ("macro", "chexpert_macro")):
        scores[f"{prefix}_precision"], scores[f"{prefix}_recall"], scores[f"{prefix}_f1"] = (
            precision_recall_f1(y_true, y_pred, average))
    precision, recall, f1 = example_based(y_true, y_pred)
    scores["chexpert_example_precision"] = float(precision.mean()) if len(precision) else 0.0
    scores["chexpert_example_recall"] = float(recall.mean()) if len(recall) else 0.0
    scores["chexpert_example_f1"] = float(f1.mean()) if len(f1) else 0.0
    for classes, tag in ((CHEXPERT_CLASSES, "14"), (FIVE_CLASSES, "5")):
        rrg_true = binarize(reference_labels, uncertain_positive=True, classes=classes)
        rrg_pred = binarize(predicted_labels, uncertain_positive=True, classes=classes)
        for average in ("micro", "macro"):
            scores[f"rrg_{tag}_{average}_f1"] = precision_recall_f1(rrg_true, rrg_pred, average)[2]
            if labeler == "chexbert":
                scores[f"chexbert_{tag}_{average}_f1"] = scores[f"rrg_{tag}_{average}_f1"]
    return scores


def label_unique(labeler: Any, reports: list[str]) -> list[Labels]:
    """Label each distinct text once: labels are a function of the text, and generated reports
    repeat a lot (R2Gen-family models emit many identical reports), so this is exact and cheap."""
    unique = list(dict.fromkeys(reports))
    by_text = dict(zip(unique, labeler.label(unique)))
    return [dict(by_text[r]) for r in reports]


def labels_table(ids: list[str], reference_labels: list[Labels], predicted_labels: list[Labels]) -> pd.DataFrame:
    rows = []
    for side, labels in (("reference", reference_labels), ("prediction", predicted_labels)):
        for study_id, row in zip(ids, labels):
            rows.append({"id": study_id, "side": side,
                         **{c: ("" if row.get(c) is None else int(row[c])) for c in CHEXPERT_CLASSES}})
    return pd.DataFrame(rows, columns=["id", "side", *CHEXPERT_CLASSES])


@METRICS.register("chexpert")
class CheXpertMetric(Metric):
    description = ("CheXpert clinical efficacy: micro/macro (R2Gen), example-based (PromptMRG) and CheXbert-rrg "
                   "P/R/F1; per-class table (Table 3)")
    needs = ("nothing with labeler=rules (default); labeler=chexbert needs chexbert.pth "
             "(checkpoint=PATH or env BOXMED_CHEXBERT_CHECKPOINT) and a bert-base-uncased tokenizer")
    provides = (
        "chexpert_precision", "chexpert_recall", "chexpert_f1",
        "chexpert_macro_precision", "chexpert_macro_recall", "chexpert_macro_f1",
        "chexpert_example_precision", "chexpert_example_recall", "chexpert_example_f1",
        "rrg_14_micro_f1", "rrg_14_macro_f1", "rrg_5_micro_f1", "rrg_5_macro_f1",
    )  # + chexbert_14_micro_f1 ... chexbert_5_macro_f1 with labeler=chexbert only

    def __init__(self, labeler: str = "rules", reference_labels: str = "labeler", **options: Any) -> None:
        super().__init__(labeler=labeler, reference_labels=reference_labels, **options)
        if reference_labels not in ("labeler", "dataset"):
            raise BoxmedError(f"chexpert option reference_labels={reference_labels!r}: use 'labeler' (label the "
                              "reference text, R2Gen's way) or 'dataset' (the study's own CheXpert labels)")
        self.labeler_name = labeler
        self.reference_labels = reference_labels
        self.labeler_options = {k: v for k, v in options.items() if k not in _HARNESS_OPTIONS}

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        labeler = get_labeler(self.labeler_name, **self.labeler_options)
        ids = list(references)
        if self.reference_labels == "dataset":
            missing = [i for i in ids if not (studies and i in studies and studies[i].labels)]
            if missing:
                raise DataError(f"{len(missing)} studies have no CheXpert labels (e.g. {missing[:5]})",
                                fix="use chexpert.reference_labels=labeler, or a dataset that ships labels")
            reference_labels = [{c: studies[i].labels.get(c) for c in CHEXPERT_CLASSES} for i in ids]  # type: ignore[index,union-attr]
            predicted_labels = label_unique(labeler, [hypotheses[i] for i in ids])
        else:
            # One call for both sides: CheXbert batches them together.
            labels = label_unique(labeler, [references[i] for i in ids] + [hypotheses[i] for i in ids])
            reference_labels, predicted_labels = labels[:len(ids)], labels[len(ids):]
        result = MetricResult()
        described = labeler.describe()
        labeler_name = str(described.get("labeler", self.labeler_name))
        result.corpus = ce_scores(reference_labels, predicted_labels, labeler=labeler_name)
        y_true = binarize(reference_labels, uncertain_positive=False)
        y_pred = binarize(predicted_labels, uncertain_positive=False)
        precision, recall, f1 = example_based(y_true, y_pred)
        result.per_sample = {
            "chexpert_example_precision": dict(zip(ids, map(float, precision))),
            "chexpert_example_recall": dict(zip(ids, map(float, recall))),
            "chexpert_example_f1": dict(zip(ids, map(float, f1))),
            # per-study counts over the 14 classes: `compare` recomputes the corpus micro P/R/F1
            # from their sums in every bootstrap / randomisation resample
            "chexpert_tp": dict(zip(ids, map(float, ((y_true == 1) & (y_pred == 1)).sum(axis=1)))),
            "chexpert_fp": dict(zip(ids, map(float, ((y_true == 0) & (y_pred == 1)).sum(axis=1)))),
            "chexpert_fn": dict(zip(ids, map(float, ((y_true == 1) & (y_pred == 0)).sum(axis=1)))),
        }
        result.tables = {"per_class": per_class_table(y_true, y_pred),
                         "chexpert_labels": labels_table(ids, reference_labels, predicted_labels)}
        result.conventions = {
            "chexpert_labeler": labeler_name,
            **{f"chexpert_{k}": v for k, v in described.items() if k != "labeler"},
            "chexpert_reference_labels": ("reference reports labelled by the same labeler" if self.reference_labels == "labeler"
                                          else "the dataset's CheXpert labels of each study"),
            "chexpert_f1": "R2Gen: positive = 1 (uncertain, negative, blank = 0); sklearn micro over 14 classes",
            "chexpert_macro_f1": "R2Gen binarisation; sklearn macro over 14 classes",
            "chexpert_example_f1": "PromptMRG: positives only, per report over 14 labels, averaged; 0/0 = 0",
            "rrg_f1": (f"f1chexbert rrg: uncertain = positive; micro/macro over 14 and over 5 classes; "
                       f"labels by {labeler_name}"),
            **({"chexbert_f1": "the rrg_* numbers under f1chexbert's names (labels by CheXbert)"}
               if labeler_name == "chexbert" else {}),
            "chexpert_ce_labeler": f"every chexpert_* and rrg_* number: labels by {labeler_name}",
            "chexpert_per_sample": "chexpert_example_precision/recall/f1 per study (R2Gen binarisation)",
        }
        return result
