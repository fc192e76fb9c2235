"""Issue 10 parts 1, 5, 8: lazy training rows, one answer format for MCL and SVR, R_IoU's
group std, and the training-library version check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boxmed_eval.datasets.base import get_dataset
from boxmed_eval.errors import BoxmedError
from boxmed_model import data as stage_data
from boxmed_model.rewards import format_reward_one, group_stds, iou_reward, iou_reward_one, parse_boxes
from boxmed_model.versions import check_training_versions, version_problems
from tests.test_boxmed_training import make_studies

pytest.importorskip("datasets")


def test_rows_hold_paths_not_images_and_decode_lazily(tmp_path: Path) -> None:
    studies = make_studies(tmp_path)
    for rows in (stage_data.mcl_rows(studies), stage_data.svr_rows(studies), stage_data.adapter_rows(studies)):
        assert all(set(row) == set(stage_data.COLUMNS) for row in rows)
        assert all(isinstance(v, str) for row in rows for v in row.values())  # text only: no PIL images
        dataset = stage_data.to_dataset(rows)
        item = dataset[0]
        image = (item.get("images") or [item.get("image")])[0]
        assert image.size == (112, 96)  # 448x384 at 1/4 per side, decoded when read
        assert "image_path" not in item and "id" not in item


def _boxed_targets(studies: list) -> list[tuple[str, list[list[float]]]]:
    """(target text, solution) of the MCL rows written in the SVR answer format."""
    lazy = [r for r in stage_data.mcl_rows(studies) if r["kind"] == "ground"]
    rows = stage_data.materialize(lazy)
    assert all(row["prompt"] == stage_data.prompts.svr_messages(raw["text"]) for row, raw in zip(rows, lazy))
    return [(row["completion"][0]["content"][0]["text"], json.loads(raw["solution"])) for row, raw in zip(rows, lazy)]


def test_every_boxed_mcl_chain_is_an_svr_answer_with_its_box(tmp_path: Path) -> None:
    studies = make_studies(tmp_path)
    targets = _boxed_targets(studies)
    assert len(targets) == len(studies)  # one boxed chain per fake study
    for (text, solution), study in zip(targets, studies):
        box = study.boxes[0]
        want = [min(1000, round(v / side * 1000))  # 0..1000, clamped to the image
                for v, side in zip((box.x1, box.y1, box.x2, box.y2), (448, 384, 448, 384))]
        assert [list(b) for b in parse_boxes(text.split("<answer>")[1])] == [want] == solution
        assert format_reward_one(text) == 1.0 and iou_reward_one(text, solution) == 1.0
        assert "Box:" not in text.split("<answer>")[0]  # the box is only where R_IoU reads it


def test_every_boxed_mcl_chain_of_the_demo_parses_to_its_box(tmp_path: Path) -> None:
    studies = [s for s in get_dataset("demo", None).load("train") if s.boxes][:12]
    assert studies
    targets = _boxed_targets(studies)
    assert targets
    for text, solution in targets:
        assert format_reward_one(text) == 1.0
        assert iou_reward_one(text, solution) == pytest.approx(1.0)


def test_iou_group_std_is_logged() -> None:
    logged: dict[str, float] = {}
    solution = [[[0, 0, 500, 500]]] * 4
    good, bad = "<think>x</think><answer>(0,0),(500,500)</answer>", "<think>x</think><answer>none</answer>"
    iou_reward([good, bad, bad, bad], solution, phrase=["a", "a", "b", "b"],
               log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged["iou_group_std"] == pytest.approx(0.25)  # groups a: std 0.5, b: std 0
    assert logged["iou_flat_groups"] == pytest.approx(0.5)
    assert group_stds([1.0, 1.0, 0.0], ["p", "p", "q"]) == [0.0, 0.0]


def test_version_check_names_installed_and_required() -> None:
    check_training_versions()  # the installed stack is supported
    problems = version_problems({"transformers": "4.57.1", "trl": "0.24.0", "peft": "0.21.2"})
    assert problems == ["transformers 4.57.1 is installed, BoxMed-RL training requires transformers>=5.0,<6",
                        "trl 0.24.0 is installed, BoxMed-RL training requires trl>=1.0,<2"]
    with pytest.raises(BoxmedError, match=r"trl 0\.24\.0 is installed.*trl>=1\.0,<2"):
        check_training_versions({"transformers": "5.2.0", "trl": "0.24.0", "peft": "0.21.2"})
    assert version_problems({"transformers": "5.2.0", "trl": "1.0.0", "peft": None}) == [
        "peft is not installed (required >=0.17,<1)"]
