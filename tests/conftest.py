"""Shared fixtures: a tiny IU X-Ray-format dataset written in R2Gen's layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "There is a small right pleural effusion. Heart size is normal.",
    "Cardiomegaly. No focal consolidation.",
    "Left lower lobe opacity concerning for pneumonia. No pneumothorax.",
    "Lungs are clear. No acute osseous abnormality.",
    "Mild pulmonary edema. Moderate cardiomegaly.",
]


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def write_iu_dataset(root: Path, n_train: int = 12, n_val: int = 3, n_test: int = 6, seed: int = 0) -> Path:
    """An R2Gen-layout IU X-Ray folder whose images encode which report they come with, so that
    image retrieval is meaningful."""
    rng = np.random.default_rng(seed)
    annotation: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    counter = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for _ in range(n):
            kind = counter % len(REPORTS)
            study_id = f"CXR{counter:04d}_IM-{counter:04d}"
            paths = []
            for view in range(2):
                image = np.full((64, 64), 40, dtype=np.float32)
                image[:, kind * 10:(kind * 10) + 10] = 220  # a bright band whose place encodes the report
                image += rng.normal(0, 8, size=image.shape)
                rel = f"{study_id}/{view}.png"
                (root / "images" / study_id).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / rel)
                paths.append(rel)
            annotation[split].append({"id": study_id, "report": REPORTS[kind], "image_path": paths, "split": split})
            counter += 1
    (root / "annotation.json").write_text(json.dumps(annotation), encoding="utf-8")
    return root


@pytest.fixture
def iu_root(tmp_path: Path) -> Path:
    return write_iu_dataset(tmp_path / "iu")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep generated caches (demo dataset) out of the user's home during tests, shared per session."""
    if "BOXMED_CACHE" not in os.environ:
        monkeypatch.setenv("BOXMED_CACHE", str(tmp_path_factory.getbasetemp() / "boxmed-cache"))
