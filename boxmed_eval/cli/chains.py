"""``boxmed-eval chains``: print the BoxMed-RL reasoning chains (Finding -> Disease ->
Anatomy [-> Box]) that medical concept learning trains on, for inspection."""

from __future__ import annotations

import json

import click

from boxmed_eval.cli.app import main


@main.command("chains")
@click.option("--dataset", required=True, help="Dataset name (see `boxmed-eval datasets`).")
@click.option("--data-root", default=None, help="Data root of the dataset.")
@click.option("--split", default="train", show_default=True)
@click.option("--limit", type=int, default=5, show_default=True, help="Number of studies to print (0 = all).")
@click.option("--target", is_flag=True, help="Print the full MCL target (<think> chains </think><answer> findings).")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON object per study (id, chains) instead of text.")
def chains_command(dataset: str, data_root: str | None, split: str, limit: int, target: bool, as_jsonl: bool) -> None:
    """Decompose each study's findings into chains with the CoT builder (boxmed_model.cot)."""
    from boxmed_eval.datasets.base import get_dataset
    from boxmed_model import cot, knowledge

    studies = get_dataset(dataset, data_root).load(split)
    if limit:
        studies = studies[:limit]
    if not as_jsonl:
        click.secho(f"# {len(studies)} studies of {dataset}/{split}; disease mapping: {knowledge.labeler_name()} "
                    "labeler; boxes in Qwen2-VL 0..1000 coordinates", fg="cyan")
    for study in studies:
        chains = cot.build_chains(study, image_size=_image_size(study))
        if as_jsonl:
            click.echo(json.dumps({"id": study.id, "chains": [
                {"finding": c.finding, "concept": c.concept, "diseases": c.diseases, "regions": c.regions, "boxes": c.boxes}
                for c in chains]}))
            continue
        click.secho(study.id, bold=True)
        text = cot.render_target(chains, study.findings) if target else cot.render_reasoning(chains)
        click.echo(text + "\n")


def _image_size(study) -> tuple[int, int] | None:  # noqa: ANN001 - Study
    """(width, height) of the first image, read only when a box lacks the image size."""
    if not study.boxes or all(b.image_width and b.image_height for b in study.boxes) or not study.image_paths:
        return None
    from PIL import Image

    try:
        with Image.open(study.image_paths[0]) as image:
            return image.size
    except OSError:
        return None
