"""The synthetic demo dataset: deterministic generation, real file formats, images that agree
with the report text, caching and atomic generation."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boxmed_eval.datasets import DATASETS, get_dataset
from boxmed_eval.datasets import demo as demo_module
from boxmed_eval.datasets.demo import (BOXES_FILE, CHEXPERT_FILE, DEMO_REGIONS, DEMO_VERSION, EMPTY_FINDINGS,
                                       SPLIT_SIZES, _Sentence, demo_root, labels_from_sentences)
from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES, Study


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's demo dataset: the same cache folder conftest points BOXMED_CACHE at, so
    the other tests using the demo reuse this generation (or generated it already)."""
    cache = Path(os.environ.get("BOXMED_CACHE") or tmp_path_factory.getbasetemp() / "boxmed-cache")
    started = time.perf_counter()
    root = demo_root(cache / "demo" / DEMO_VERSION)
    print(f"\ndemo dataset generated in {time.perf_counter() - started:.1f} s")  # shown with -s; not asserted
    return root


@pytest.fixture(scope="module")
def studies(demo_dir: Path) -> dict[str, list[Study]]:
    adapter = get_dataset("demo", demo_dir)
    return {split: adapter.load(split) for split in ("train", "val", "test")}


def all_studies(studies: dict[str, list[Study]]) -> list[Study]:
    return [s for split in studies.values() for s in split]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(demo_dir: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    again = demo_root(tmp_path / "second")
    print(f"\nsecond generation {time.perf_counter() - started:.1f} s")
    first, second = tree_digest(demo_dir), tree_digest(again)
    assert len(first) == 2 * sum(SPLIT_SIZES[s] + EMPTY_FINDINGS[s] for s in SPLIT_SIZES) + 4
    assert first == second  # annotation.json, chexpert.csv, ms_cxr_boxes.csv, manifest and every PNG


# The reports and labels come from the seeded generator only (no floating-point pixels), so
# they are the same on every machine. A deliberate change of the generator must bump
# DEMO_VERSION (cached copies of the old version are then refused, not silently reused)
# and update these digests.
PINNED_DIGESTS = {
    "v2": {"annotation.json": "031db83f2ad35b29efd23fed6971a4a0fef37c63de7fea700bb5ed2d8b04c8dc",
           "chexpert.csv": "eb75b0dec6fd7b548d51b085a52023b3584cc187a2d8a0011cd73b538eb5332d"},
    # v3: 600 / 60 / 100 studies (the ids hash the version), larger and brighter findings.
    "v3": {"annotation.json": "59f6b6828931744aaa7247f6638af9bddf8808c4d7c4d071efa8864de082a3ce",
           "chexpert.csv": "c628cfc9837a1148590217ce23e8e5c276e9b20212b2cdae9bf0bc58730e6bb7"},
}


def test_reports_and_labels_match_the_pinned_version(demo_dir: Path) -> None:
    digests = {name: hashlib.sha256((demo_dir / name).read_bytes()).hexdigest()
               for name in ("annotation.json", "chexpert.csv")}
    assert digests == PINNED_DIGESTS[DEMO_VERSION], "generator output changed: bump DEMO_VERSION and the digests"


def test_split_sizes_and_empty_findings_dropped(demo_dir: Path, studies: dict[str, list[Study]]) -> None:
    assert {split: len(items) for split, items in studies.items()} == SPLIT_SIZES
    adapter = get_dataset("demo", demo_dir)
    for split in ("test", "train", "val", "test"):  # one adapter, several loads: counted per load
        adapter.load(split)
        assert adapter.dropped_empty == EMPTY_FINDINGS[split]
    annotation = json.loads((demo_dir / "annotation.json").read_text())
    empty = [e for entries in annotation.values() for e in entries if not e["report"].strip()]
    assert len(empty) == sum(EMPTY_FINDINGS.values()) >= 2
    ids = [s.id for s in all_studies(studies)]
    assert len(ids) == len(set(ids))


def test_studies_use_the_real_formats(demo_dir: Path, studies: dict[str, list[Study]]) -> None:
    study = studies["test"][0]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", study.id)  # a MIMIC-style dicom id
    assert study.meta["dicom_id"] == study.id and study.meta["subject_id"].isdigit()
    assert [Path(p).name for p in study.image_paths] == ["0.png", "1.png"]  # frontal first
    with Image.open(study.image_paths[0]) as frontal, Image.open(study.image_paths[1]) as lateral:
        assert frontal.mode == lateral.mode == "L" and frontal.size == lateral.size == (256, 256)
    header = (demo_dir / CHEXPERT_FILE).read_text().splitlines()[0].split(",")
    assert header[:2] == ["subject_id", "study_id"] and sorted(header[2:]) == sorted(CHEXPERT_CLASSES)
    assert header[2:] != list(CHEXPERT_CLASSES)  # MIMIC's alphabetical order, read by name
    box_header = (demo_dir / BOXES_FILE).read_text().splitlines()[0]
    assert box_header.startswith("dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split")
    for s in all_studies(studies):
        assert s.labels is not None and set(s.labels) == set(CHEXPERT_CLASSES)
        assert "\n" not in s.findings and "  " not in s.findings  # normalised on load
    raw = json.loads((demo_dir / "annotation.json").read_text())
    assert any("\n" in e["report"] and e["report"].strip() for entries in raw.values() for e in entries)


# Words whose presence in a report means the class was mentioned (so its label is not blank).
MENTIONS = {
    "Pneumothorax": r"pneumothorax", "Pleural Effusion": r"effusion", "Edema": r"edema", "Fracture": r"fracture",
    "Lung Lesion": r"nodule|mass", "Atelectasis": r"atelectasis", "Pneumonia": r"pneumonia",
    "Consolidation": r"consolidation", "Pleural Other": r"pleural thickening", "Support Devices": r"\btube\b|\bline\b|catheter",
}


def test_labels_agree_with_the_report_text(studies: dict[str, list[Study]]) -> None:
    every = all_studies(studies)
    for s in every:
        text = s.findings.lower()
        for cls, pattern in MENTIONS.items():
            assert (s.labels[cls] is None) == (re.search(pattern, text) is None), (cls, s.findings, s.labels)
        if s.labels["No Finding"] == 1:
            assert not any(s.labels[c] in (1, -1) for c in CHEXPERT_CLASSES if c not in ("No Finding", "Support Devices"))
        else:
            assert s.labels["No Finding"] is None
    # Hand-checked sentences.
    def with_sentence(sentence: str) -> list[Study]:
        return [s for s in every if sentence in s.findings]
    for s in with_sentence("No pneumothorax or pleural effusion."):
        assert s.labels["Pneumothorax"] == 0 and s.labels["Pleural Effusion"] == 0
    for s in with_sentence("Heart size is normal."):
        assert s.labels["Cardiomegaly"] == 0
    for s in with_sentence("Bibasilar atelectasis."):
        assert s.labels["Atelectasis"] == 1
    for s in with_sentence("Possible left basilar atelectasis.") + with_sentence("Possible right basilar atelectasis."):
        assert s.labels["Atelectasis"] == -1
    for s in with_sentence("The heart is severely enlarged."):
        assert s.labels["Cardiomegaly"] == 1 and s.labels["No Finding"] is None
    assert with_sentence("No pneumothorax or pleural effusion.") and with_sentence("Heart size is normal.")
    assert with_sentence("Possible left basilar atelectasis.") or with_sentence("Possible right basilar atelectasis.")
    # Every value occurs, normal studies exist, and the report phrasing varies.
    values = {s.labels[c] for s in every for c in CHEXPERT_CLASSES}
    assert values == {1, 0, -1, None}
    normal = [s for s in every if s.labels["No Finding"] == 1 and not s.boxes]
    assert 0.1 * len(every) < len(normal) < 0.5 * len(every)
    assert len({s.findings for s in every}) > 0.9 * len(every)
    text = " ".join(s.findings for s in every).lower()
    for words in ("right lower lobe", "left apex", "bilateral", "possible", "cannot be excluded", "no "):
        assert words in text, words


def test_labels_agree_with_the_rules_labeler(studies: dict[str, list[Study]]) -> None:
    """The project's rule-based CheXpert labeler reads the same labels from the report text
    (it misses 'mediastinal widening' and reads 'may be widened' as positive: a few cells)."""
    from boxmed_eval.metrics.labelers import get_labeler

    every = all_studies(studies)
    read = get_labeler("rules").label([s.findings for s in every])
    cells = [(s.labels[c], labels[c]) for s, labels in zip(every, read) for c in CHEXPERT_CLASSES]
    agreement = sum(ours == theirs for ours, theirs in cells) / len(cells)
    print(f"\nrules labeler agreement with the demo labels: {agreement:.4f} of {len(cells)} cells")
    assert agreement > 0.98


def test_labels_from_sentences_aggregates_mentions() -> None:
    labels = labels_from_sentences([_Sentence("Possible small left pleural effusion.", {"Pleural Effusion": -1}, 2),
                                    _Sentence("No pleural effusion.", {"Pleural Effusion": 0}, 2),
                                    _Sentence("Endotracheal tube in place.", {"Support Devices": 1}, 0)])
    assert labels["Pleural Effusion"] == -1 and labels["Support Devices"] == 1
    assert labels["No Finding"] is None and labels["Edema"] is None
    only_device = labels_from_sentences([_Sentence("Tube.", {"Support Devices": 1}, 0),
                                         _Sentence("No pneumothorax.", {"Pneumothorax": 0}, 2)])
    assert only_device["No Finding"] == 1 and only_device["Pneumothorax"] == 0


def test_boxes_are_inside_the_image_with_known_regions(studies: dict[str, list[Study]]) -> None:
    every = all_studies(studies)
    boxes = [b for s in every for b in s.boxes]
    assert len(boxes) > 150
    for b in boxes:
        assert 0 <= b.x1 < b.x2 <= 256 and 0 <= b.y1 < b.y2 <= 256
        assert (b.image_width, b.image_height, b.image_index) == (256, 256, 0)
        assert b.region in DEMO_REGIONS and b.category in CHEXPERT_CLASSES and b.phrase
    assert {b.region for b in boxes} == set(DEMO_REGIONS)
    # Each box's phrase is a sentence of its study's findings; bilateral phrases have two boxes.
    two_box_phrases = 0
    for s in every:
        for phrase in {b.phrase for b in s.boxes}:
            assert phrase + "." in s.findings
            count = sum(b.phrase == phrase for b in s.boxes)
            two_box_phrases += count == 2
        # A box grounds a positive finding.
        for b in s.boxes:
            assert s.labels[b.category] == 1
    assert two_box_phrases >= 10


def test_location_words_match_the_box_side(studies: dict[str, list[Study]]) -> None:
    """Patient's right is the image's left: 'right ...' boxes lie left of the midline."""
    checked = 0
    for s in all_studies(studies):
        for b in s.boxes:
            centre = (b.x1 + b.x2) / 2
            words = b.phrase.lower()
            if b.region.startswith("right") or (" right " in f" {words} " and "left" not in words
                                                and "jugular" not in words and b.region != "spine"):
                assert centre < 128, (b.phrase, b.region, centre)
                checked += 1
            elif b.region.startswith("left") or (" left " in f" {words} " and "right" not in words):
                assert centre > 128, (b.phrase, b.region, centre)
                checked += 1
    assert checked > 100


def _mean_in(path: str, box: tuple[int, int, int, int]) -> float:
    with Image.open(path) as image:
        pixels = np.asarray(image, dtype=np.float32)
    x1, y1, x2, y2 = box
    return float(pixels[y1:y2, x1:x2].mean())


def test_drawn_findings_are_visible_in_their_boxes(studies: dict[str, list[Study]]) -> None:
    """Inside a finding's box the frontal image differs from the same place in normal studies."""
    every = all_studies(studies)
    normal = [s for s in every if s.labels["No Finding"] == 1 and not s.boxes][:15]
    expected = {"Pleural Effusion": +1, "Lung Lesion": +1, "Consolidation": +1, "Pneumonia": +1, "Lung Opacity": +1,
                "Atelectasis": +1, "Edema": +1, "Cardiomegaly": +1, "Pneumothorax": -1, "Pleural Other": +1}
    # (Tubes are thin lines over a trachea that moves with the patient: too few pixels for a mean.)
    for category, sign in expected.items():
        differences = []
        for s in every:
            for b in s.boxes:
                if b.category != category:
                    continue
                box = (int(b.x1), int(b.y1), int(b.x2), int(b.y2))
                baseline = np.mean([_mean_in(n.image_paths[0], box) for n in normal])
                differences.append(_mean_in(s.image_paths[0], box) - baseline)
            if len(differences) >= 6:
                break
        assert len(differences) >= 3, category
        assert sign * float(np.median(differences)) > 8.0, (category, differences)


def test_images_of_a_finding_are_closer_to_each_other_than_to_normals(studies: dict[str, list[Study]]) -> None:
    """What an image-nearest-neighbour baseline relies on: with large findings, the nearest
    training image (downsampled pixels) shares the finding more often than chance."""
    def embed(s: Study) -> np.ndarray:
        with Image.open(s.image_paths[0]) as image:
            return np.asarray(image.resize((32, 32)), dtype=np.float32).ravel()
    train = studies["train"]
    bank = np.stack([embed(s) for s in train])
    hits = total = 0
    for s in studies["test"]:
        if s.labels["Cardiomegaly"] != 1 and s.labels["Pleural Effusion"] != 1:
            continue
        nearest = train[int(np.argmin(((bank - embed(s)) ** 2).sum(axis=1)))]
        hits += any(s.labels[c] == 1 == nearest.labels[c] for c in ("Cardiomegaly", "Pleural Effusion"))
        total += 1
    base_rate = np.mean([any(t.labels[c] == 1 for c in ("Cardiomegaly", "Pleural Effusion")) for t in train])
    assert total >= 10 and hits / total > base_rate + 0.1, (hits, total, base_rate)


def test_cached_dataset_is_reused_from_the_cache_variable(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (demo_dir / "annotation.json").stat().st_mtime_ns
    monkeypatch.setenv("BOXMED_CACHE", str(demo_dir.parent.parent))
    adapter = DATASETS.get("demo")()  # no data root needed
    assert adapter.data_root == demo_dir.resolve()
    assert len(adapter.load("val")) == SPLIT_SIZES["val"]
    assert (demo_dir / "annotation.json").stat().st_mtime_ns == before


def test_foreign_or_other_version_folders_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no demo dataset"):
        demo_root(foreign)
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"version": "v0"}))
    with pytest.raises(DataError, match="version 'v0'"):
        demo_root(old)


def _tiny_generate(target: Path, **_: object) -> dict[str, str]:
    target.mkdir(parents=True)
    (target / "manifest.json").write_text(json.dumps({"version": DEMO_VERSION}))
    return {}


def test_concurrent_generation_keeps_the_first_complete_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "race" / "v1"

    def generate_while_another_process_finishes(target: Path, **kwargs: object) -> dict[str, str]:
        _tiny_generate(root)  # the other process renames its complete copy into place first
        (root / "winner").write_text("1")
        return _tiny_generate(target)

    monkeypatch.setattr(demo_module, "generate_demo", generate_while_another_process_finishes)
    assert demo_root(root) == root.absolute()
    assert (root / "winner").exists()
    assert [p.name for p in root.parent.iterdir()] == ["v1"]  # our temporary copy is gone


def test_failed_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(target: Path, **_: object) -> None:
        target.mkdir(parents=True)
        (target / "annotation.json").write_text("{}")
        raise RuntimeError("killed")

    monkeypatch.setattr(demo_module, "generate_demo", crash)
    with pytest.raises(RuntimeError):
        demo_root(tmp_path / "cache" / "v1")
    assert list((tmp_path / "cache").iterdir()) == []
    # An empty folder given as data root is filled in place.
    monkeypatch.setattr(demo_module, "generate_demo", _tiny_generate)
    (tmp_path / "empty").mkdir()
    assert (demo_root(tmp_path / "empty") / "manifest.json").is_file()
