"""Benchmark of the CheXpert labelers: speed, evaluation-set agreement, IU X-Ray agreement.

    python benchmarks/bench_labeler.py [--labeler rules] [--data ../shared/data] [--repeat 3]

Prints
1. reports/s of the labeler on the findings of ``iu_xray/indiana_reports.csv`` (one process,
   one core: the rules labeler is pure Python, single-threaded);
2. agreement on ``benchmarks/labeler_eval_set.jsonl`` (hand-written expectations) plus the
   four sample reports of the CheXpert labeler with their official labels
   (``chexpert_samples/``): per-observation 4-outcome F1 (positive / negative / uncertain /
   blank) and accuracy, and their macro average (see ``boxmed_eval.metrics.labelers.agreement``);
3. agreement on IU X-Ray with ``openi_file2label_chexpert14.json`` (labels from another
   project's neural CheXpert labeler, which maps positive or uncertain to 1, blank and negative
   to 0; its input was FINDINGS + IMPRESSION): our labels are mapped the same way and compared
   per class (F1 of the positive class taking theirs as reference, and accuracy).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boxmed_eval.metrics.labelers import get_labeler  # noqa: E402
from boxmed_eval.metrics.labelers.agreement import agreement, read_eval_set  # noqa: E402
from boxmed_eval.records import CHEXPERT_CLASSES  # noqa: E402

OPENI_ORDER = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
               "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
               "Pneumothorax", "Support Devices"]  # openi_file2label_readme.txt (alphabetical)


def official_samples(data: Path) -> tuple[list[str], list[dict[str, int | None]]]:
    """The CheXpert labeler's 4 sample reports and its official output, or empty lists."""
    path = data / "chexpert_samples" / "chexpert_labeler_labeled_reports.csv"
    if not path.exists():
        return [], []
    reports, labels = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            reports.append(row["Reports"])
            labels.append({c: None if row[c] == "" else int(float(row[c])) for c in CHEXPERT_CLASSES})
    return reports, labels


def speed(labeler, data: Path, repeat: int) -> None:
    path = data / "iu_xray" / "indiana_reports.csv"
    if not path.exists():
        print(f"speed: skipped ({path} not found)")
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reports = [row["findings"] for row in csv.DictReader(handle) if row["findings"].strip()]
    labeler.label(reports[:50])  # warm-up (lazy loading)
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        labeler.label(reports)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    words = sum(len(r.split()) for r in reports) / len(reports)
    # CPU time is what one core spends; wall time also counts waiting on a busy machine.
    print(f"speed: {len(reports)} IU X-Ray findings (mean {words:.0f} words): "
          f"{len(reports) / best_cpu:,.0f} reports/s of CPU time on one core, "
          f"{len(reports) / best_wall:,.0f} reports/s wall clock (best of {repeat}, one process)")


def eval_set(labeler, data: Path) -> None:
    reports, expected, rows = read_eval_set(ROOT / "benchmarks" / "labeler_eval_set.jsonl")
    heldout = [i for i, row in enumerate(rows) if "heldout" in row.get("tags", [])]
    if heldout:
        part = agreement([expected[i] for i in heldout], labeler.label([reports[i] for i in heldout]))
        print(f"\nheld-out part ({len(heldout)} reports written after the rules were tuned): macro F1 "
              f"{part.macro_f1:.3f}, mean accuracy {part.mean_accuracy:.3f}, all 14 right {part.exact_reports:.3f}")
    extra_reports, extra_labels = official_samples(data)
    print(f"\nevaluation set: {len(reports)} hand-labelled reports + {len(extra_reports)} official CheXpert samples")
    result = agreement(expected + extra_labels, labeler.label(reports + extra_reports))
    print(result.table())
    if extra_reports:
        official = agreement(extra_labels, labeler.label(extra_reports))
        print(f"official CheXpert labeler samples: {official.exact_reports * len(extra_reports):.0f}/"
              f"{len(extra_reports)} reports with all 14 labels identical")


def iu_xray(labeler, data: Path) -> None:
    labels_path = data / "iu_xray" / "openi_file2label_chexpert14.json"
    reports_path = data / "iu_xray" / "openi_reports_ori.json"
    if not labels_path.exists() or not reports_path.exists():
        print("\nIU X-Ray agreement: skipped (openi files not found)")
        return
    from sklearn.metrics import f1_score

    reference = json.loads(labels_path.read_text(encoding="utf-8"))
    studies = json.loads(reports_path.read_text(encoding="utf-8"))
    ids, texts = [], []
    for key, vector in reference.items():
        report = studies.get(key, {}).get("report", {})
        text = " ".join(str(report.get(part) or "") for part in ("FINDINGS", "IMPRESSION")).strip()
        if text:
            ids.append(key)
            texts.append(text)
    ours = labeler.label(texts)
    print(f"\nIU X-Ray: {len(ids)} studies, reference = openi_file2label_chexpert14.json (neural labeler; "
          "positive or uncertain = 1); ours mapped the same way")
    print(f"{'observation':28s} {'ref pos':>7s} {'our pos':>7s} {'F1(pos)':>7s} {'accuracy':>8s}")
    f1s = []
    all_true, all_pred = [], []
    for name in CHEXPERT_CLASSES:
        index = OPENI_ORDER.index(name)
        y_true = [int(reference[i][index]) for i in ids]
        y_pred = [int(o[name] in (1, -1)) for o in ours]
        all_true += y_true
        all_pred += y_pred
        f1 = f1_score(y_true, y_pred, zero_division=0)
        f1s.append(f1)
        accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / len(ids)
        print(f"{name:28s} {sum(y_true):7d} {sum(y_pred):7d} {f1:7.3f} {accuracy:8.3f}")
    print(f"macro F1 {sum(f1s) / len(f1s):.3f}; micro F1 {f1_score(all_true, all_pred, zero_division=0):.3f}")


def read_dev_set(data: Path) -> tuple[list[str], list[set[str]]]:
    """The 2,483 Open-i reports with the positives the CheXpert labeler gave (MedViLL's Train.jsonl)."""
    path = data / "chexpert_samples" / "chexpert_labeler_openi_train_positives.jsonl"
    if not path.exists():
        return [], []
    texts, positives = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts.append(row["text"])
        # the label field is a quoted, comma-separated list: "'Cardiomegaly', 'Edema'" or ""
        positives.append({part.strip().strip("'\"") for part in row["label"].split(",") if part.strip().strip("'\"")})
    return texts, positives


def positive_agreement(reference: list[set[str]], ours: list[dict[str, int | None]]) -> tuple[dict, float, float]:
    """Per-class positive F1 (ours == 1 against the reference positives), macro and micro F1."""
    per_class: dict[str, tuple[int, int, int]] = {}
    for name in CHEXPERT_CLASSES:
        tp = sum(1 for ref, o in zip(reference, ours) if name in ref and o[name] == 1)
        fp = sum(1 for ref, o in zip(reference, ours) if name not in ref and o[name] == 1)
        fn = sum(1 for ref, o in zip(reference, ours) if name in ref and o[name] != 1)
        per_class[name] = (tp, fp, fn)
    f1 = {n: (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")) for n, (tp, fp, fn) in per_class.items()}
    present = [v for n, v in f1.items() if per_class[n][0] + per_class[n][2] > 0]
    tp, fp, fn = (sum(c[k] for c in per_class.values()) for k in range(3))
    return {n: (per_class[n], f1[n]) for n in per_class}, sum(present) / len(present), 2 * tp / (2 * tp + fp + fn)


def dev_set(labeler, data: Path) -> None:
    texts, reference = read_dev_set(data)
    if not texts:
        print("\ndevelopment set: skipped (chexpert_labeler_openi_train_positives.jsonl not found)")
        return
    ours = labeler.label(texts)
    table, macro, micro = positive_agreement(reference, ours)
    print(f"\ndevelopment set: {len(texts)} Open-i reports, reference = the CheXpert labeler's positives")
    print(f"{'observation':28s} {'ref pos':>7s} {'our pos':>7s} {'F1(pos)':>7s}")
    for name, ((tp, fp, fn), f1) in table.items():
        print(f"{name:28s} {tp + fn:7d} {tp + fp:7d} {f1:7.3f}")
    print(f"positive macro F1 {macro:.3f} (classes with a reference positive); positive micro F1 {micro:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeler", default="rules")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    labeler = get_labeler(args.labeler)
    speed(labeler, args.data, args.repeat)
    eval_set(labeler, args.data)
    dev_set(labeler, args.data)
    iu_xray(labeler, args.data)


if __name__ == "__main__":
    main()
