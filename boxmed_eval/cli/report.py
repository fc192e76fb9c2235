"""``boxmed-eval report RUN [RUN ...] --out report.html``: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from boxmed_eval.cli.app import main
from boxmed_eval.stats import ALTERNATIVES, RADEVAL_SEED


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: report.html in the first run directory).")
@click.option("--images", type=click.Choice(("auto", "embed", "link", "none")), default="auto", show_default=True,
              help="embed: thumbnails inside the page (one file); link: thumbnails written to a folder "
                   "<OUT name>_files/ beside the page and linked relative to it (a much smaller page for "
                   "thousands of studies); auto: embed up to 1,000 studies, link beyond; none: no images.")
@click.option("--thumbnail", type=int, default=256, show_default=True, help="Thumbnail size (longer side, pixels).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the dataset's images are, for relative image paths (default: run.json's data_root).")
@click.option("--alternative", type=click.Choice(ALTERNATIVES), default="less", show_default=True,
              help="Direction of the comparison table's Wilcoxon tests, as `boxmed-eval compare` "
                   "(the first RUN is the base).")
@click.option("--resamples", type=int, default=1000, show_default=True,
              help="Bootstrap resamples of the metric table's 95% intervals (0: no intervals).")
@click.option("--seed", type=int, default=RADEVAL_SEED, show_default=True)
@click.option("--title", default=None, help="Page title (default: the run names).")
def report(runs: tuple[Path, ...], out: Path | None, images: str, thumbnail: int, data_root: Path | None,
           alternative: str, resamples: int, seed: int, title: str | None) -> None:
    """An HTML report of RUNS: provenance, metrics with bootstrap CIs, the comparison with
    Wilcoxon stars and a significance matrix (several runs), per-class CheXpert table and chart,
    and a case browser (image with reference and predicted boxes, both findings with matching
    sentences highlighted, reasoning, CheXpert labels, judge replies). Opens without network.
    Prints the path of the page."""
    from boxmed_eval.report import build_report, human_size

    target = out if out is not None else runs[0] / "report.html"
    result = build_report(runs, target, images=images, thumbnail=thumbnail, data_root=data_root,
                          alternative=alternative, n_resamples=resamples, seed=seed, title=title, progress=True)
    detail = f"{result.n_cases} cases, {result.n_images} thumbnails ({result.image_mode})"
    if result.files_dir is not None:
        detail += f" in {result.files_dir} ({human_size(result.image_bytes)})"
    if result.missing_images:
        detail += f", {result.missing_images} images not found"
    click.echo(f"report: {human_size(result.bytes)}, {detail}", err=True)
    click.echo(str(result.path))
