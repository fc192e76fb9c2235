"""``boxmed-eval label``: CheXpert labels for every report of a file, like the CheXpert labeler's CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.records import CHEXPERT_CLASSES, atomic_write_text, read_reports

# The CheXpert labeler writes No Finding first; readers here match columns by name anyway.
OUTPUT_CLASS_ORDER: tuple[str, ...] = ("No Finding", *[c for c in CHEXPERT_CLASSES if c != "No Finding"])


def format_label(value: int | None) -> str:
    return "" if value is None else str(int(value))


@main.command("label")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--labeler", "labeler_name", default="rules", show_default=True,
              help="rules (offline, no model) or chexbert (needs chexbert.pth).")
@click.option("--checkpoint", type=click.Path(), default=None,
              help="chexbert.pth for --labeler chexbert (else env BOXMED_CHEXBERT_CHECKPOINT or the HF cache).")
@click.option("--bert", type=click.Path(file_okay=False), default=None,
              help="Local bert-base-uncased directory (tokenizer/config) for --labeler chexbert.")
@click.option("--device", default=None, help="torch device for chexbert (default: cuda when available).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Reports per chexbert batch.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output CSV (default: FILE's name with _labels.csv, next to it).")
@click.option("--no-report", is_flag=True, help="Leave the report text out of the CSV.")
def label_command(file: str, labeler_name: str, checkpoint: str | None, bert: str | None, device: str | None,
                  batch_size: int, out: str | None, no_report: bool) -> None:
    """Write the 14 CheXpert labels (1 positive, 0 negative, -1 uncertain, blank) of each report in
    FILE (JSONL/CSV with 'id' and 'report' columns) to a CSV whose columns are the class names."""
    from boxmed_eval.metrics.labelers import get_labeler

    reports = read_reports(file, role="report", allow_empty=True)
    options = {}
    if labeler_name == "chexbert":
        options = {"checkpoint": checkpoint, "bert": bert, "device": device, "batch_size": batch_size}
    elif checkpoint or bert:
        raise click.UsageError("--checkpoint/--bert only apply to --labeler chexbert")
    labeler = get_labeler(labeler_name, **options)
    ids = list(reports)
    labels = labeler.label([reports[i] for i in ids])

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", *([] if no_report else ["report"]), *OUTPUT_CLASS_ORDER])
    for study_id, row in zip(ids, labels):
        writer.writerow([study_id, *([] if no_report else [reports[study_id]]),
                         *(format_label(row.get(c)) for c in OUTPUT_CLASS_ORDER)])
    path = Path(out) if out else Path(file).with_name(f"{Path(file).stem}_labels.csv")
    atomic_write_text(path, buffer.getvalue())

    counts = {c: [sum(r.get(c) == v for r in labels) for v in (1, -1, 0)] for c in OUTPUT_CLASS_ORDER}
    click.echo(f"labelled {len(ids)} reports with {labeler_name}: {path}", err=True)
    for name, (positive, uncertain, negative) in counts.items():
        click.echo(f"  {name:28s} positive {positive:5d}  uncertain {uncertain:5d}  negative {negative:5d}", err=True)
