"""A synthetic chest-radiograph-like dataset, generated deterministically on first use.

Nothing is downloaded and nothing is kept in git: ``demo_root()`` generates the dataset
(seeded numpy, a few seconds on one core) into ``$BOXMED_CACHE/demo/<DEMO_VERSION>`` (default
``~/.cache/boxmed_eval/demo/v3``) or into ``--data-root DIR`` when that holds no dataset
yet. Generation happens in a temporary folder renamed into place, so two processes never
see half a dataset.

What it holds (760 studies with findings: train 600 / val 60 / test 100, plus three whose
findings are empty, which the adapter drops and counts like real empty-findings studies):

- ``images/<dicom_id>/0.png`` a 256x256 grayscale frontal (PA) view: dark lung fields with
  vessel markings, bright mediastinum, heart, spine, ribs, diaphragm and noise; ``1.png`` a
  simpler lateral view. Patient's right is on the image's left, as on real radiographs.
- findings drawn where the report sentence says: effusion = bright meniscus at the named
  lung base, cardiomegaly = wider heart, pneumothorax = dark rim without vessel markings at
  the named apex, nodule/mass = bright disc, consolidation/pneumonia/opacity = bright patch in
  the named zone, atelectasis = linear band, edema = bilateral perihilar haze, enlarged
  cardiomediastinum = wide mediastinum, support devices = bright tube lines, fracture = rib
  discontinuity (or a dense vertebra), pleural other = pleural thickening. Uncertain findings
  ("Possible ...") are drawn faintly and get no box.

Model resolution (v3): BoxMed-RL reads demo images at ``DEMO_IMAGE_SCALE`` = 1/2, not the
paper's 1/4. The paper's 1/4 applies to ~2500 px MIMIC-CXR images (~600 px, hundreds of visual
tokens); 1/4 of 256 px is 64 px, i.e. 4 Qwen2-VL tokens, and a model cannot read findings from
that (v2's trained models wrote one report for every study). At 1/2 the model sees 25 tokens
(140 px after the processor), and every finding is drawn large enough to cover several of its
14 px patches (v3 enlarged nodules, atelectasis bands, tubes, pleural thickening and rib
breaks, and raised the contrast of opacities and edema). v3 also has more studies (v2: 280 /
40 / 80) so that a model trained from random weights sees each finding often enough.
- ``annotation.json`` in R2Gen's MIMIC-CXR layout (id = dicom id, study_id, subject_id,
  report, image_path, split): the findings, written from the 14 CheXpert observations and the
  paper's 12 anatomical regions with varied phrasing, negated and uncertain sentences.
- ``chexpert.csv`` in MIMIC-CXR's ``mimic-cxr-2.0.0-chexpert.csv`` layout (subject_id,
  study_id, 14 classes as 1.0 / 0.0 / -1.0 / blank), derived from what each report says.
- ``ms_cxr_boxes.csv`` in the MS-CXR 1.1.0 layout: one row per box of each positive finding
  sentence (bilateral findings have two rows for one phrase), plus a ``region`` column (one of
  ``DEMO_REGIONS``; MS-CXR itself has none).

The adapter reads these files with the parsers the real datasets use.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from boxmed_eval.datasets.base import DATASETS, DatasetAdapter
from boxmed_eval.datasets.chexpert_labels import read_chexpert_labels
from boxmed_eval.datasets.ms_cxr import MS_CXR_COLUMNS, group_by_image, read_ms_cxr_csv
from boxmed_eval.datasets.r2gen_annotation import read_r2gen_annotation
from boxmed_eval.errors import DataError
from boxmed_eval.records import CHEXPERT_CLASSES, Box, Study
from boxmed_eval.text import prepare_findings

log = logging.getLogger(__name__)

DEMO_VERSION = "v3"  # bump whenever the generated files change (tests pin their digests)
DEMO_SEED = 20250521
IMAGE_SIZE = 256
# The resize factor BoxMed-RL uses on demo images (boxmed_model/configs/demo_cpu.toml). The paper
# uses 1/4 of MIMIC-CXR's ~2500 px; 1/4 of 256 px is 64 px, which Qwen2-VL encodes as 4 visual
# tokens (14 px patches merged 2x2), too few to read findings from. At 1/2 the 128 px image is
# resized by the processor to 140 px: 10x10 patches, 25 visual tokens.
DEMO_IMAGE_SCALE = 0.5
SPLIT_SIZES: dict[str, int] = {"train": 600, "val": 60, "test": 100}
# Extra studies whose findings are empty (MIMIC has many): loaded, then dropped and counted.
EMPTY_FINDINGS: dict[str, int] = {"train": 1, "val": 0, "test": 2}

DEMO_REGIONS: tuple[str, ...] = (
    "abdomen", "cardiac silhouette", "left apical zone", "right apical zone", "left hilar structures",
    "right hilar structures", "left lung", "right lung", "mediastinum", "whole lung", "spine", "trachea",
)
"""The 12 anatomical regions of the BoxMed-RL paper's Anatomical Region Knowledge Bank."""

ANNOTATION_FILE = "annotation.json"
CHEXPERT_FILE = "chexpert.csv"
BOXES_FILE = "ms_cxr_boxes.csv"
MANIFEST_FILE = "manifest.json"  # written last: its presence marks a complete dataset
# mimic-cxr-2.0.0-chexpert.csv orders its classes alphabetically (unlike CheXbert's heads).
_CHEXPERT_CSV_ORDER = tuple(sorted(CHEXPERT_CLASSES))
_PATHOLOGIES = tuple(c for c in CHEXPERT_CLASSES if c not in ("No Finding", "Support Devices"))


# ============================================================================ geometry

_S = IMAGE_SIZE
_V, _U = np.meshgrid((np.arange(_S, dtype=np.float32) + 0.5) / _S, (np.arange(_S, dtype=np.float32) + 0.5) / _S,
                     indexing="ij")  # _U: horizontal (0 = image left = patient's right), _V: vertical


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Normalised squared radius: < 1 inside the ellipse."""
    return ((_U - cx) / rx) ** 2 + ((_V - cy) / ry) ** 2


def _soft_disc(cx: float, cy: float, rx: float, ry: float, edge: float = 0.25) -> np.ndarray:
    """1 inside, falling smoothly to 0 over the outer ``edge`` fraction of the radius."""
    r = np.sqrt(_ellipse(cx, cy, rx, ry))
    return np.clip((1.0 + edge - r) / (2 * edge), 0.0, 1.0).astype(np.float32)


def _segment_distance(p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Distance of each pixel centre to the segment p0-p1 (normalised units)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_U - x0) * dx + (_V - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(_U - (x0 + t * dx), _V - (y0 + t * dy))


def _polyline(points: list[tuple[float, float]], width: float) -> np.ndarray:
    distance = np.min([_segment_distance(a, b) for a, b in zip(points, points[1:])], axis=0)
    return np.clip(1.0 - distance / width, 0.0, 1.0).astype(np.float32)


def _bbox(mask: np.ndarray, *, pad: int = 1, min_size: int = 6) -> tuple[int, int, int, int] | None:
    """Pixel box (x1, y1, x2, y2; x2/y2 exclusive) around a mask, padded, at least
    ``min_size`` wide and high, clipped to the image; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x1, x2 = int(cols[0]) - pad, int(cols[-1]) + 1 + pad
    y1, y2 = int(rows[0]) - pad, int(rows[-1]) + 1 + pad
    if x2 - x1 < min_size:
        grow = min_size - (x2 - x1)
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
    if y2 - y1 < min_size:
        grow = min_size - (y2 - y1)
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
    return max(x1, 0), max(y1, 0), min(x2, _S), min(y2, _S)


# ============================================================================ anatomy


@dataclass
class _Anatomy:
    """Per-study variation of a normal chest, plus what findings change in it."""

    dx: float
    dy: float
    lung_rx: float
    lung_ry: float
    heart_rx: float
    heart_ry: float
    mediastinum_half_width: float
    gain: float
    markings_seed: int
    # modified by findings
    pneumothorax: dict[str, float] = field(default_factory=dict)  # side -> depth (normalised)
    rib_fracture: tuple[str, int, float] | None = None  # side, rib index, u of the break
    spine_fracture: float | None = None  # v of the dense vertebra

    @property
    def lung_cy(self) -> float:
        return 0.45 + self.dy

    def lung_cx(self, side: str) -> float:
        # Patient's right lung is on the image's left.
        return 0.5 + self.dx + (-0.19 if side == "right" else 0.19)

    def dome(self, side: str) -> np.ndarray:
        """v of the hemidiaphragm under each column (higher in the middle, the right one higher)."""
        cx = self.lung_cx(side)
        base = self.lung_cy + self.lung_ry * 0.92 - (0.02 if side == "right" else 0.0)
        return base - 0.08 * (1.0 - np.clip(((_U - cx) / self.lung_rx) ** 2, 0.0, 1.0))

    def lung_mask(self, side: str) -> np.ndarray:
        return (_ellipse(self.lung_cx(side), self.lung_cy, self.lung_rx, self.lung_ry) < 1.0) & (_V < self.dome(side))

    def lung_top(self) -> float:
        return self.lung_cy - self.lung_ry

    def lung_bottom(self, side: str) -> float:
        return self.lung_cy + self.lung_ry * 0.92 - (0.02 if side == "right" else 0.0)

    def heart_center(self) -> tuple[float, float]:
        return 0.54 + self.dx, 0.64 + self.dy

    def heart_mask(self) -> np.ndarray:
        cx, cy = self.heart_center()
        return _ellipse(cx, cy, self.heart_rx, self.heart_ry) < 1.0

    def mediastinum_mask(self) -> np.ndarray:
        return ((np.abs(_U - 0.5 - self.dx) < self.mediastinum_half_width)
                & (_V > 0.06 + self.dy) & (_V < 0.62 + self.dy))

    def rib_v(self, k: int) -> np.ndarray:
        """v of the k-th posterior rib's centre line under each column (ribs droop laterally)."""
        return 0.15 + self.dy + _RIB_SPACING * k + 0.11 * ((_U - 0.5 - self.dx) / 0.4) ** 2

    def zone_center(self, side: str, zone: str) -> tuple[float, float]:
        """(u, v) of a named lung zone."""
        cx = self.lung_cx(side)
        lateral = -1.0 if side == "right" else 1.0  # towards the chest wall, in u
        top, bottom = self.lung_top(), self.lung_bottom(side)
        if zone == "apex":
            return cx + 0.02 * lateral, top + 0.07
        if zone == "upper":
            return cx + 0.01 * lateral, top + 0.16
        if zone == "mid":
            return cx + 0.02 * lateral, self.lung_cy
        if zone == "lower":
            return cx + 0.02 * lateral, bottom - 0.15
        if zone == "hilar":
            return cx - 0.075 * lateral, self.lung_cy + 0.01
        raise ValueError(zone)


_RIB_SPACING, _RIB_HALF_WIDTH = 0.062, 0.011
# v3: the small findings are drawn larger than in v2 (nodules, bands, tubes, thickening, rib
# breaks) so that they still cover a few pixels at the demo's model resolution (DEMO_IMAGE_SCALE).
_FRACTURE_STEP, _FRACTURE_GAP, _TUBE_WIDTH = 0.03, 0.028, 0.011
_MARKINGS_BANK: list[np.ndarray] = []


def _markings(seed: int) -> np.ndarray:
    """Vessel-like texture (one of a small fixed bank, so generation stays fast)."""
    if not _MARKINGS_BANK:
        bank_rng = np.random.default_rng([DEMO_SEED, 7])
        for _ in range(8):
            fine = gaussian_filter(bank_rng.normal(size=(_S, _S)).astype(np.float32), 1.2)
            _MARKINGS_BANK.append((fine / fine.std()).astype(np.float32))
    return _MARKINGS_BANK[seed % len(_MARKINGS_BANK)]


def _frontal_base(anatomy: _Anatomy) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A normal-looking PA chest with the anatomy's modifications; returns the image and masks."""
    a = anatomy
    img = np.full((_S, _S), 0.07, dtype=np.float32)
    body = _ellipse(0.5 + a.dx, 0.56 + a.dy, 0.47, 0.62) < 1.0
    img[body] = 0.52
    hilum_weight = {}
    lungs = {}
    markings = _markings(a.markings_seed)
    for side in ("right", "left"):
        lung = a.lung_mask(side)
        lungs[side] = lung
        cx = a.lung_cx(side)
        hilum = cx + (0.075 if side == "right" else -0.075)
        # Vessel markings are strongest at the hilum and fade to the periphery.
        hilum_weight[side] = np.exp(-np.hypot(_U - hilum, _V - a.lung_cy) / 0.13).astype(np.float32)
        values = 0.2 + 0.05 * hilum_weight[side] + 0.035 * markings * (0.4 + hilum_weight[side])
        img = np.where(lung, values, img)
    pneumothorax = np.zeros((_S, _S), dtype=bool)
    pleural_line = np.zeros((_S, _S), dtype=np.float32)
    for side, depth in a.pneumothorax.items():
        cx = a.lung_cx(side)
        lateral = -1.0 if side == "right" else 1.0
        # The collapsed lung: the same lung shrunk away from the apex and the chest wall.
        inner = _ellipse(cx - lateral * depth * 0.5, a.lung_cy + depth * 0.9,
                         a.lung_rx - depth * 0.5, a.lung_ry - depth * 0.6)
        apical = _V < a.lung_top() + 0.2
        pneumothorax |= lungs[side] & (inner >= 1.0) & apical
        pleural_line += (np.abs(np.sqrt(inner) - 1.0) < 0.025) * lungs[side] * apical * 0.16
    img = np.where(pneumothorax, 0.06, img)  # air without lung markings
    img += pleural_line
    # Ribs: bright curved bands over the chest (distance to the nearest of 10 rib centre lines,
    # all at once); a fracture breaks one and steps its lateral part off.
    rib_position = (_V - a.rib_v(0)) / _RIB_SPACING
    nearest = np.clip(np.rint(rib_position), 0, 9)
    ribs = np.clip(1.0 - np.abs(rib_position - nearest) * (_RIB_SPACING / _RIB_HALF_WIDTH), 0.0, 1.0)
    if a.rib_fracture:
        side, k, u_break = a.rib_fracture
        lateral_part = (_U < u_break) if side == "right" else (_U > u_break)
        this_rib = nearest == k
        stepped = np.clip(1.0 - np.abs(_V - a.rib_v(k) - _FRACTURE_STEP) / _RIB_HALF_WIDTH, 0.0, 1.0)
        ribs = np.where(this_rib & lateral_part, stepped, ribs) * ~(this_rib & (np.abs(_U - u_break) < _FRACTURE_GAP))
    img += 0.1 * np.clip(ribs, 0, 1) * body * (np.abs(_U - 0.5 - a.dx) > 0.04)
    # Clavicles.
    for side in ("right", "left"):
        s = -1.0 if side == "right" else 1.0
        img += 0.12 * _polyline([(0.5 + a.dx + s * 0.05, 0.15 + a.dy), (0.5 + a.dx + s * 0.3, 0.1 + a.dy)], 0.014)
    mediastinum = a.mediastinum_mask()
    heart = a.heart_mask()
    img = np.where(mediastinum, 0.7, img)
    img = np.where(heart, 0.76, img)
    # Spine with vertebral bodies, seen through the mediastinum.
    spine = np.abs(_U - 0.5 - a.dx) < 0.033
    vertebrae = 0.5 + 0.5 * np.cos((_V - a.dy) * 2 * np.pi / 0.06)
    img += (0.06 + 0.04 * vertebrae) * spine * body
    if a.spine_fracture is not None:
        img += 0.35 * spine * (np.abs(_V - a.spine_fracture) < 0.016)
    trachea = (np.abs(_U - 0.5 - a.dx) < 0.014) & (_V < 0.33 + a.dy)
    img = np.where(trachea & body, img - 0.3, img)
    # Diaphragm and abdomen below it.
    right_side = _U < 0.5 + a.dx
    below = np.where(right_side, _V > a.dome("right"), _V > a.dome("left")) & (_V > 0.55)
    img = np.where(below & body & ~heart, 0.64, img)
    return img, {"lung_right": lungs["right"], "lung_left": lungs["left"], "heart": heart,
                 "mediastinum": mediastinum, "pneumothorax": pneumothorax, "body": body}


def _lateral_base(anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """A simpler lateral view; returns the image and its lung mask."""
    a = anatomy
    img = np.full((_S, _S), 0.07, dtype=np.float32)
    body = _ellipse(0.5 + a.dx, 0.55 + a.dy, 0.4, 0.6) < 1.0
    img[body] = 0.5
    lung = (_ellipse(0.52 + a.dx, 0.46 + a.dy, 0.27, 0.31) < 1.0) & (_V < 0.72 + a.dy + 0.05 * (_U - 0.5))
    img = np.where(lung, 0.22 + 0.03 * _markings(a.markings_seed + 3), img)
    heart_scale = a.heart_rx / 0.145
    heart = _ellipse(0.36 + a.dx, 0.62 + a.dy, 0.12 * heart_scale, 0.13) < 1.0
    img = np.where(heart, 0.72, img)
    spine = np.abs(_U - 0.8 - a.dx + 0.06 * (_V - 0.5)) < 0.05
    img += (0.18 + 0.06 * np.cos((_V - a.dy) * 2 * np.pi / 0.065)) * spine * body
    img += 0.15 * _polyline([(0.17 + a.dx, 0.2 + a.dy), (0.2 + a.dx, 0.6 + a.dy)], 0.012)  # sternum
    return img, lung & ~heart


_NOISE_BANK: list[np.ndarray] = []


def _noise(rng: np.random.Generator) -> np.ndarray:
    """Pixel noise (0.014 of full scale): a randomly shifted and flipped field of a small
    fixed bank, which is much cheaper than drawing 65k normals per image."""
    if not _NOISE_BANK:
        bank_rng = np.random.default_rng([DEMO_SEED, 11])
        _NOISE_BANK.extend(bank_rng.standard_normal(size=(_S, _S), dtype=np.float32) * np.float32(0.014 * 255.0)
                           for _ in range(8))
    field_ = _NOISE_BANK[int(rng.integers(len(_NOISE_BANK)))]
    shifted = np.roll(field_, (int(rng.integers(_S)), int(rng.integers(_S))), axis=(0, 1))
    return shifted[::-1] if rng.random() < 0.5 else shifted


def _finish(img: np.ndarray, rng: np.random.Generator, gain: float) -> bytes:
    """Blur, noise, gain, 8-bit PNG bytes (deterministic)."""
    img = gaussian_filter(img, 0.7, truncate=3.0)
    img *= gain * 255.0
    img += _noise(rng)
    pixels = np.clip(img, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)  # fast; still lossless
    return buffer.getvalue()


# ============================================================================ findings and sentences


@dataclass
class _Sentence:
    text: str
    labels: dict[str, int]  # CheXpert class -> 1 / 0 / -1
    rank: float  # report order: devices 0, lungs 1, pleura 2, heart and mediastinum 3, bones 4


@dataclass
class _Finding:
    cls: str
    certainty: int  # 1 positive, -1 uncertain
    side: str = ""  # "right", "left", "bilateral" or ""
    zone: str = ""
    severity: str = ""
    kind: str = ""
    sentence: str = ""
    boxes: list[tuple[int, int, int, int, str]] = field(default_factory=list)  # x1, y1, x2, y2, region


_RANK: dict[str, float] = {
    "Support Devices": 0, "Lung Opacity": 1, "Consolidation": 1, "Pneumonia": 1, "Lung Lesion": 1,
    "Atelectasis": 1, "Edema": 1, "Pleural Effusion": 2, "Pneumothorax": 2, "Pleural Other": 2,
    "Cardiomegaly": 3, "Enlarged Cardiomediastinum": 3, "Fracture": 4}
_WEIGHTS = {"Pleural Effusion": 3.0, "Atelectasis": 3.0, "Cardiomegaly": 2.5, "Lung Opacity": 2.5, "Edema": 2.0,
            "Support Devices": 2.0, "Consolidation": 1.5, "Pneumonia": 1.5, "Pneumothorax": 1.5, "Lung Lesion": 1.5,
            "Enlarged Cardiomediastinum": 1.0, "Fracture": 1.0, "Pleural Other": 1.0}
_PARENCHYMA = {"Lung Opacity", "Consolidation", "Pneumonia", "Lung Lesion", "Atelectasis", "Edema"}
_ORDINALS = {3: "fourth", 4: "fifth", 5: "sixth", 6: "seventh", 7: "eighth"}

# Normal and negated sentences: (text, labels it sets, classes whose presence rules it out,
# report position, topic). A report says at most one sentence per topic.
_NORMAL_SENTENCES: list[tuple[str, dict[str, int], set[str], float, str]] = [
    ("The lungs are clear.", {}, _PARENCHYMA, 1.2, "lungs"),
    ("The lungs are well expanded and clear.", {}, _PARENCHYMA | {"Pneumothorax"}, 1.2, "lungs"),
    ("Lungs are clear bilaterally.", {}, _PARENCHYMA, 1.2, "lungs"),
    ("No focal consolidation.", {"Consolidation": 0}, {"Pneumonia", "Lung Opacity"}, 1.5, "consolidation"),
    ("There is no focal consolidation to suggest pneumonia.", {"Consolidation": 0, "Pneumonia": 0}, {"Lung Opacity"},
     1.5, "consolidation"),
    ("No pulmonary edema.", {"Edema": 0}, set(), 1.5, "edema"),
    ("There is no evidence of pulmonary edema.", {"Edema": 0}, set(), 1.5, "edema"),
    ("No pulmonary nodules or masses.", {"Lung Lesion": 0}, set(), 1.5, "lesion"),
    ("No pneumothorax or pleural effusion.", {"Pneumothorax": 0, "Pleural Effusion": 0}, set(), 2.5, "pleura"),
    ("There is no pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0}, set(), 2.5, "pleura"),
    ("No pleural effusion.", {"Pleural Effusion": 0}, set(), 2.5, "effusion"),
    ("No pneumothorax.", {"Pneumothorax": 0}, set(), 2.5, "pneumothorax"),
    ("Heart size is normal.", {"Cardiomegaly": 0}, set(), 3.5, "heart"),
    ("The heart is normal in size.", {"Cardiomegaly": 0}, set(), 3.5, "heart"),
    # 'Cardiomediastinal' and 'hilar contours' are Enlarged Cardiomediastinum mentions for the
    # CheXpert labeler (and this project's rules labeler), not Cardiomegaly ones.
    ("The cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": 0}, {"Cardiomegaly"},
     3.5, "heart"),
    ("Mediastinal contours are normal.", {"Enlarged Cardiomediastinum": 0}, set(), 3.6, "mediastinum"),
    ("Hilar contours are unremarkable.", {"Enlarged Cardiomediastinum": 0}, {"Edema", "Lung Lesion"}, 3.7, "hila"),
    ("No acute osseous abnormality.", {}, {"Fracture"}, 4.5, "bones"),
    ("No displaced rib fracture.", {"Fracture": 0}, set(), 4.5, "bones"),
]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _choice(rng: np.random.Generator, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[int(rng.integers(len(options)))]


def _location(rng: np.random.Generator, side: str, zone: str) -> str:
    """A prepositional phrase naming a lung zone: 'in the right lower lobe', 'at the left apex'."""
    if zone == "upper":
        return _choice(rng, [f"in the {side} upper lobe", f"in the {side} upper lung", f"in the {side} upper zone"])
    if zone == "mid":
        if side == "right":
            return _choice(rng, ["in the right middle lobe", "in the right mid lung"])
        return _choice(rng, ["in the lingula", "in the left mid lung"])
    if zone == "lower":
        return _choice(rng, [f"in the {side} lower lobe", f"at the {side} lung base", f"in the {side} lower lung"])
    if zone == "hilar":
        return _choice(rng, [f"in the {side} hilum", f"at the {side} hilum"])
    if zone == "apex":
        return f"at the {side} apex"
    raise ValueError(zone)


def _adjective_location(rng: np.random.Generator, side: str, zone: str) -> str:
    """An adjectival location: 'right lower lobe', 'left basilar'."""
    if zone == "lower":
        return _choice(rng, [f"{side} lower lobe", f"{side} basilar", f"{side} base"])
    if zone == "upper":
        return f"{side} upper lobe"
    if zone == "mid":
        return "right middle lobe" if side == "right" else "lingular"
    return f"{side} {zone}"


def _sample_finding(cls: str, rng: np.random.Generator) -> _Finding:
    """Choose where and how a finding appears and write its sentence."""
    uncertain = cls not in ("Support Devices",) and rng.random() < 0.15
    f = _Finding(cls=cls, certainty=-1 if uncertain else 1)
    side = _choice(rng, ["right", "left"])
    pick = lambda options: _choice(rng, options)  # noqa: E731
    if cls == "Pleural Effusion":
        f.side = "bilateral" if rng.random() < 0.25 else side
        f.severity = pick(["small", "moderate", "large"])
        if uncertain:
            f.severity = "small"
            f.sentence = pick([f"Possible small {f.side} pleural effusion.",
                               f"Blunting of the {side} costophrenic angle may represent a small pleural effusion."]) \
                if f.side != "bilateral" else "Possible small bilateral pleural effusions."
            if "costophrenic" in f.sentence:
                f.side = side
        elif f.side == "bilateral":
            f.sentence = pick([f"{_cap(f.severity)} bilateral pleural effusions.",
                               f"There are {f.severity} bilateral pleural effusions.",
                               f"{_cap(f.severity)} bilateral pleural effusions are present."])
        else:
            f.sentence = pick([f"{_cap(f.severity)} {side} pleural effusion.",
                               f"There is a {f.severity} {side} pleural effusion.",
                               f"{_cap(f.severity)} {side} pleural effusion is present.",
                               f"Layering {f.severity} {side} pleural effusion."])
    elif cls == "Cardiomegaly":
        f.severity = pick(["mild", "moderate", "severe"])
        adverb = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}[f.severity]
        if uncertain:
            f.sentence = pick(["Heart size is borderline enlarged.", "Possible mild cardiomegaly."])
        else:
            f.sentence = pick([f"The heart is {adverb} enlarged.", f"{_cap(f.severity)} cardiomegaly.",
                               f"There is {f.severity} cardiomegaly.", f"The cardiac silhouette is {adverb} enlarged."])
    elif cls == "Pneumothorax":
        f.side, f.zone = side, "apex"
        f.severity = pick(["small", "moderate", "large"])
        if uncertain:
            f.severity = "small"
            f.sentence = pick([f"Possible tiny {side} apical pneumothorax.",
                               f"A small {side} apical pneumothorax cannot be excluded."])
        else:
            f.sentence = pick([f"{_cap(f.severity)} {side} apical pneumothorax.",
                               f"There is a {f.severity} {side} pneumothorax at the apex.",
                               f"A {f.severity} pneumothorax is seen at the {side} apex."])
    elif cls == "Lung Lesion":
        f.side, f.zone = side, pick(["upper", "upper", "mid", "lower", "hilar"])
        f.kind = "mass" if rng.random() < 0.35 else "nodule"
        size = pick(["4 cm", "5 cm", "3.5 cm"]) if f.kind == "mass" else pick(["8 mm", "1 cm", "1.5 cm", "12 mm"])
        location = _location(rng, side, f.zone)
        if uncertain:
            f.sentence = pick([f"Possible {f.kind} {location}.", f"Questionable small {f.kind} {location}."])
        else:
            f.sentence = pick([f"There is a {size} {f.kind} {location}.", f"A {size} {f.kind} is seen {location}.",
                               f"{_cap(f.kind)} {location} measuring {size}."])
    elif cls in ("Consolidation", "Pneumonia", "Lung Opacity"):
        f.side, f.zone = side, pick(["lower", "lower", "mid", "upper"])
        if cls == "Lung Opacity" and not uncertain and rng.random() < 0.2:
            f.side, f.zone = "bilateral", "diffuse"
            f.sentence = pick(["Diffuse bilateral airspace opacities.", "There are diffuse bilateral opacities."])
            return f
        location = _location(rng, side, f.zone)
        adjective = _adjective_location(rng, side, f.zone)
        if cls == "Consolidation":
            f.sentence = (f"Possible consolidation {location}." if uncertain else
                          pick([f"Focal consolidation {location}.", f"There is consolidation {location}.",
                                f"{_cap(adjective)} consolidation."]))
        elif cls == "Pneumonia":
            f.sentence = (pick([f"Pneumonia {location} cannot be excluded.", f"Possible early pneumonia {location}."])
                          if uncertain else
                          pick([f"{_cap(adjective)} pneumonia.", f"Findings {location} are consistent with pneumonia.",
                                f"There is pneumonia {location}."]))
        else:
            f.sentence = (f"Possible subtle opacity {location}." if uncertain else
                          pick([f"Patchy opacity {location}.", f"There is a hazy opacity {location}.",
                                f"Increased opacity {location}."]))
    elif cls == "Atelectasis":
        f.zone = pick(["lower", "lower", "mid"])
        f.side = "bilateral" if (f.zone == "lower" and rng.random() < 0.3) else side
        if uncertain:
            f.side, f.zone = side, "lower"
            f.sentence = f"Possible {side} basilar atelectasis."
        elif f.side == "bilateral":
            f.sentence = pick(["Bibasilar atelectasis.", "Mild bibasilar atelectasis.",
                               "There is bibasilar atelectasis."])
        else:
            location = _location(rng, side, f.zone)
            f.sentence = pick([f"{_cap(_adjective_location(rng, side, f.zone))} atelectasis.",
                               f"Linear atelectasis {location}.", f"Subsegmental atelectasis {location}.",
                               f"Plate-like atelectasis {location}."])
    elif cls == "Edema":
        f.side = "bilateral"
        f.severity = pick(["mild", "moderate", "severe"])
        f.sentence = ("Possible mild pulmonary edema." if uncertain else
                      pick([f"{_cap(f.severity)} pulmonary edema.",
                            f"There is {f.severity} interstitial pulmonary edema.",
                            f"{_cap(f.severity)} perihilar pulmonary edema."]))
    elif cls == "Enlarged Cardiomediastinum":
        f.sentence = ("The mediastinum may be slightly widened." if uncertain else
                      pick(["The mediastinum is widened.", "Widened mediastinal contour.",
                            "Mediastinal widening is noted."]))
    elif cls == "Support Devices":
        f.kind = pick(["ett", "ngt", "cvc"])
        if f.kind == "ett":
            f.sentence = pick([f"An endotracheal tube terminates {pick(['3', '4', '5'])} cm above the carina.",
                               "Endotracheal tube is in standard position."])
        elif f.kind == "ngt":
            f.sentence = pick(["A nasogastric tube courses below the diaphragm with its tip in the stomach.",
                               "Enteric tube tip is in the stomach."])
        else:
            f.sentence = pick(["A right internal jugular central venous catheter terminates in the superior vena cava.",
                               "Right internal jugular line tip is in the mid SVC."])
    elif cls == "Fracture":
        if rng.random() < 0.25 and not uncertain:
            f.kind = "spine"
            f.sentence = pick(["Compression fracture of a mid thoracic vertebral body.",
                               "There is a compression fracture of a lower thoracic vertebra."])
        else:
            f.kind, f.side = "rib", side
            rib = int(rng.integers(3, 8))
            f.zone = str(rib)
            ordinal = _ORDINALS[rib]
            f.sentence = (f"Possible nondisplaced fracture of the {side} {ordinal} rib." if uncertain else
                          pick([f"Acute fracture of the {side} {ordinal} rib.",
                                f"There is a displaced fracture of the {side} lateral {ordinal} rib.",
                                f"{_cap(side)} {ordinal} rib fracture."]))
    elif cls == "Pleural Other":
        f.side = side
        f.zone = "apex" if rng.random() < 0.6 else "lateral"
        if uncertain:
            f.zone = "apex"
            f.sentence = f"Possible {side} apical pleural thickening."
        elif f.zone == "apex":
            f.sentence = pick([f"{_cap(side)} apical pleural thickening.",
                               f"There is mild pleural thickening at the {side} apex."])
        else:
            f.sentence = pick([f"Pleural thickening along the {side} lateral chest wall.",
                               f"{_cap(side)} lateral pleural thickening."])
    else:
        raise ValueError(cls)
    return f


def _pre_anatomy(finding: _Finding, anatomy: _Anatomy, rng: np.random.Generator) -> None:
    """Findings that change the anatomy itself (before the base image is drawn)."""
    strength = 1.0 if finding.certainty == 1 else 0.45
    if finding.cls == "Cardiomegaly":
        growth = {"mild": 0.045, "moderate": 0.065, "severe": 0.085}.get(finding.severity, 0.05)
        anatomy.heart_rx = 0.145 + strength * growth
        anatomy.heart_ry = 0.13 + strength * 0.02
    elif finding.cls == "Enlarged Cardiomediastinum":
        anatomy.mediastinum_half_width = 0.062 + strength * 0.05
    elif finding.cls == "Pneumothorax":
        depth = {"small": 0.1, "moderate": 0.13, "large": 0.17}[finding.severity]
        anatomy.pneumothorax[finding.side] = strength * depth
    elif finding.cls == "Fracture":
        if finding.kind == "spine":
            anatomy.spine_fracture = 0.42 + anatomy.dy + float(rng.uniform(0.0, 0.15))
        else:
            rib = int(finding.zone)
            u_break = anatomy.lung_cx(finding.side) + (-0.1 if finding.side == "right" else 0.1)
            anatomy.rib_fracture = (finding.side, rib, u_break)


def _draw(finding: _Finding, anatomy: _Anatomy, masks: dict[str, np.ndarray], img: np.ndarray,
          lateral_overlay: np.ndarray, lateral_devices: np.ndarray,
          rng: np.random.Generator) -> list[tuple[tuple[int, int, int, int] | None, str]]:
    """Draw one finding into the frontal image and the lateral view's overlay, in place;
    (``lateral_overlay`` is later masked to the lateral lung, ``lateral_devices`` is not);
    return its boxes (pixel box, region) on the frontal image."""
    lateral = lateral_overlay
    a = anatomy
    strength = 1.0 if finding.certainty == 1 else 0.45
    sides = ["right", "left"] if finding.side == "bilateral" else [finding.side]
    boxes: list[tuple[tuple[int, int, int, int] | None, str]] = []
    cls = finding.cls

    def lung(side: str) -> np.ndarray:
        return masks[f"lung_{side}"] & ~masks["heart"]

    if cls == "Pleural Effusion":
        depth = {"small": 0.09, "moderate": 0.16, "large": 0.25}[finding.severity]
        for side in sides:
            cx = a.lung_cx(side)
            lateral_frac = np.clip((_U - cx) / a.lung_rx * (-1.0 if side == "right" else 1.0), -1.0, 1.0)
            # The meniscus climbs laterally along the chest wall.
            level = a.lung_bottom(side) - depth - 0.05 * (lateral_frac + 1.0)
            fluid = lung(side) & (_V > level)
            img += 0.42 * strength * fluid
            boxes.append((_bbox(fluid), f"{side} lung"))
        # Posterior costophrenic sulcus on the lateral view.
        lateral += 0.35 * strength * (_V > 0.74 + a.dy - depth - 0.25 * np.clip(_U - 0.55 - a.dx, 0.0, 1.0))
    elif cls == "Cardiomegaly":
        boxes.append((_bbox(masks["heart"]), "cardiac silhouette"))
    elif cls == "Enlarged Cardiomediastinum":
        boxes.append((_bbox(masks["mediastinum"] & (_V < a.heart_center()[1] - a.heart_ry * 0.6)), "mediastinum"))
    elif cls == "Pneumothorax":
        boxes.append((_bbox(masks["pneumothorax"] & (_U < 0.5 + a.dx if finding.side == "right" else _U > 0.5 + a.dx)),
                      f"{finding.side} apical zone"))
    elif cls == "Lung Lesion":
        u, v = a.zone_center(finding.side, finding.zone)
        u += float(rng.uniform(-0.02, 0.02))
        radius = float(rng.uniform(0.055, 0.07)) if finding.kind == "mass" else float(rng.uniform(0.032, 0.042))
        disc = _soft_disc(u, v, radius, radius)
        img += 0.5 * strength * disc
        lateral += 0.3 * strength * _soft_disc(0.5 + a.dx, v, radius, radius)
        region = f"{finding.side} hilar structures" if finding.zone == "hilar" else f"{finding.side} lung"
        boxes.append((_bbox(disc > 0.5), region))
    elif cls in ("Consolidation", "Pneumonia", "Lung Opacity"):
        amplitude = {"Consolidation": 0.45, "Pneumonia": 0.4, "Lung Opacity": 0.34}[cls] * strength
        texture = 0.7 + 0.3 * np.clip(_markings(a.markings_seed + 1), -1.0, 1.0)
        if finding.zone == "diffuse":
            patch = np.zeros((_S, _S), dtype=np.float32)
            for side in ("right", "left"):
                for zone in ("upper", "mid", "lower"):
                    u, v = a.zone_center(side, zone)
                    patch = np.maximum(patch, np.exp(-_ellipse(u, v, 0.085, 0.09)))
            patch = patch * (lung("right") | lung("left"))
            img += amplitude * 0.8 * patch * texture
            lateral += amplitude * 0.5 * np.exp(-_ellipse(0.52 + a.dx, 0.46 + a.dy, 0.22, 0.25))
            boxes.append((_bbox(patch > 0.35), "whole lung"))
        else:
            u, v = a.zone_center(finding.side, finding.zone)
            u += float(rng.uniform(-0.015, 0.015))
            v += float(rng.uniform(-0.02, 0.02))
            sx, sy = float(rng.uniform(0.05, 0.075)), float(rng.uniform(0.045, 0.065))
            patch = np.exp(-_ellipse(u, v, sx, sy)) * lung(finding.side)
            img += amplitude * patch * texture
            lateral += amplitude * 0.7 * np.exp(-_ellipse(0.5 + a.dx, v, sx, sy))
            boxes.append((_bbox(patch > 0.35), f"{finding.side} lung"))
    elif cls == "Atelectasis":
        for side in sides:
            u, v = a.zone_center(side, finding.zone)
            angle = float(rng.uniform(-0.3, 0.3))
            half_length, half_thickness = 0.085, 0.022
            du, dv = _U - u, _V - v
            along = du * np.cos(angle) + dv * np.sin(angle)
            across = -du * np.sin(angle) + dv * np.cos(angle)
            band = np.clip(1.0 - (np.abs(across) / half_thickness) ** 2, 0.0, 1.0) * (np.abs(along) < half_length)
            band = band * lung(side)
            img += 0.45 * strength * band
            boxes.append((_bbox(band > 0.3), f"{side} lung"))
    elif cls == "Edema":
        amplitude = {"mild": 0.24, "moderate": 0.3, "severe": 0.37}[finding.severity] * strength
        for side in ("right", "left"):
            u, v = a.zone_center(side, "hilar")
            u += 0.03 if side == "right" else -0.03
            haze = np.exp(-_ellipse(u - (0.03 if side == "right" else -0.03), v, 0.1, 0.13)) * lung(side)
            img += amplitude * haze
            boxes.append((_bbox(haze > 0.4), f"{side} hilar structures"))
        lateral += amplitude * 0.6 * np.exp(-_ellipse(0.48 + a.dx, 0.47 + a.dy, 0.13, 0.15))
    elif cls == "Support Devices":
        x0 = 0.5 + a.dx
        if finding.kind == "ett":
            tube = _polyline([(x0 - 0.002, 0.0), (x0, 0.24 + a.dy)], _TUBE_WIDTH)
            img += 0.5 * tube
            boxes.append((_bbox(tube > 0.2), "trachea"))
        elif finding.kind == "ngt":
            points = [(x0 - 0.004, 0.0), (x0 + 0.004, 0.5 + a.dy), (x0 + 0.03, 0.78 + a.dy), (x0 + 0.14, 0.86 + a.dy)]
            tube = _polyline(points, _TUBE_WIDTH)
            img += 0.5 * tube
            tip = (tube > 0.2) & (_V > a.lung_bottom("left") + 0.03)
            boxes.append((_bbox(tip), "abdomen"))
        else:
            points = [(x0 - 0.24, 0.06 + a.dy), (x0 - 0.12, 0.16 + a.dy), (x0 - 0.04, 0.24 + a.dy),
                      (x0 - 0.035, 0.33 + a.dy)]
            tube = _polyline(points, _TUBE_WIDTH)
            img += 0.5 * tube
            tip = (tube > 0.2) & (_U > x0 - 0.07)
            boxes.append((_bbox(tip), "mediastinum"))
        lateral_devices += 0.3 * _polyline([(0.45 + a.dx, 0.0), (0.47 + a.dx, 0.3 + a.dy)], 0.006)
    elif cls == "Fracture":
        if finding.kind == "spine":
            v0 = a.spine_fracture if a.spine_fracture is not None else 0.5
            region_mask = (np.abs(_U - 0.5 - a.dx) < 0.04) & (np.abs(_V - v0) < 0.02)
            boxes.append((_bbox(region_mask), "spine"))
        else:
            assert a.rib_fracture is not None
            side, rib, u_break = a.rib_fracture
            v_break = float(0.15 + a.dy + _RIB_SPACING * rib + 0.11 * ((u_break - 0.5 - a.dx) / 0.4) ** 2)
            region_mask = (np.abs(_U - u_break) < 0.035) & (np.abs(_V - v_break - 0.007) < 0.03)
            boxes.append((_bbox(region_mask), f"{side} lung"))
    elif cls == "Pleural Other":
        side = finding.side
        cx = a.lung_cx(side)
        shell = (_ellipse(cx, a.lung_cy, a.lung_rx, a.lung_ry) < 1.0) & \
                (_ellipse(cx, a.lung_cy, a.lung_rx - 0.035, a.lung_ry - 0.035) >= 1.0) & masks[f"lung_{side}"]
        if finding.zone == "apex":
            shell &= _V < a.lung_top() + 0.1
            region = f"{side} apical zone"
        else:
            lateral_side = (_U < cx - 0.05) if side == "right" else (_U > cx + 0.05)
            shell &= lateral_side & (_V > a.lung_cy - 0.12) & (_V < a.lung_cy + 0.15)
            region = f"{side} lung"
        img += 0.5 * strength * shell
        boxes.append((_bbox(shell), region))
    return boxes


# ============================================================================ one study


@dataclass
class _DemoStudy:
    dicom_id: str
    subject_id: int
    study_id: int
    split: str
    report: str
    labels: dict[str, int | None] | None
    findings: list[_Finding]
    frontal_png: bytes
    lateral_png: bytes


def _dicom_id(index: int) -> str:
    digest = hashlib.sha1(f"boxmed-demo-{DEMO_VERSION}-{index}".encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def labels_from_sentences(sentences: list[_Sentence]) -> dict[str, int | None]:
    """CheXpert labels of a report from what its sentences say, as the labelers aggregate
    mentions: any positive -> 1, else any uncertain -> -1, else negated -> 0, else blank;
    No Finding = 1 when no pathology (Support Devices excepted) is positive or uncertain."""
    labels: dict[str, int | None] = {c: None for c in CHEXPERT_CLASSES}
    for sentence in sentences:
        for cls, value in sentence.labels.items():
            current = labels[cls]
            if current is None or (current == 0 and value != 0) or (current == -1 and value == 1):
                labels[cls] = value
    if not any(labels[c] in (1, -1) for c in _PATHOLOGIES):
        labels["No Finding"] = 1
    return labels


def _generate_study(index: int, split: str, empty_findings: bool) -> _DemoStudy:
    rng = np.random.default_rng([DEMO_SEED, index])
    anatomy = _Anatomy(dx=float(rng.uniform(-0.02, 0.02)), dy=float(rng.uniform(-0.02, 0.02)),
                       lung_rx=float(rng.uniform(0.145, 0.16)), lung_ry=float(rng.uniform(0.31, 0.34)),
                       heart_rx=float(rng.uniform(0.135, 0.155)), heart_ry=float(rng.uniform(0.12, 0.135)),
                       mediastinum_half_width=float(rng.uniform(0.055, 0.068)), gain=float(rng.uniform(0.9, 1.1)),
                       markings_seed=int(rng.integers(1000)))
    findings: list[_Finding] = []
    if not empty_findings and rng.random() >= 0.25:  # about a quarter of the studies are normal
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        classes = list(_WEIGHTS)
        weights = np.array([_WEIGHTS[c] for c in classes])
        chosen = rng.choice(len(classes), size=count, replace=False, p=weights / weights.sum())
        findings = [_sample_finding(classes[i], rng) for i in sorted(chosen)]
    for finding in findings:
        _pre_anatomy(finding, anatomy, rng)
    frontal, masks = _frontal_base(anatomy)
    lateral, lateral_lung = _lateral_base(anatomy)
    lateral_overlay, lateral_devices = np.zeros_like(lateral), np.zeros_like(lateral)
    for finding in findings:
        drawn = _draw(finding, anatomy, masks, frontal, lateral_overlay, lateral_devices, rng)
        if finding.certainty == 1:  # MS-CXR grounds positive findings only
            finding.boxes = [(*box, region) for box, region in drawn if box is not None]

    sentences = [_Sentence(f.sentence, {f.cls: f.certainty}, _RANK[f.cls]) for f in findings]
    present = {f.cls for f in findings}
    said: set[str] = set()
    candidates = [s for s in _NORMAL_SENTENCES if not (set(s[1]) | s[2]) & present]
    for position in rng.permutation(len(candidates)):
        text, labels, _, rank, topic = candidates[int(position)]
        # One sentence per topic, never negating a class twice, five or six sentences at most.
        if topic in said or set(labels) & said or len(sentences) >= 6:
            continue
        if rng.random() < 0.6:
            sentences.append(_Sentence(text, dict(labels), rank))
            said |= set(labels) | {topic}
    sentences.sort(key=lambda s: s.rank)  # stable: keeps the random order within a topic
    if empty_findings:
        report = _choice(rng, ["", "   ", " \n "])
        labels = None
    else:
        if not sentences:
            sentences.append(_Sentence("The lungs are clear.", {}, 1))
        # A few reports carry the stray newlines and double spaces of real exports.
        joiner = _choice(rng, [" ", " ", " ", " ", "  ", "\n"])
        report = joiner.join(s.text for s in sentences)
        labels = labels_from_sentences(sentences)
    return _DemoStudy(dicom_id=_dicom_id(index), subject_id=19_000_000 + index, study_id=59_000_000 + index,
                      split=split, report=report, labels=labels, findings=findings,
                      frontal_png=_finish(frontal, rng, anatomy.gain),
                      lateral_png=_finish(lateral + lateral_overlay * lateral_lung + lateral_devices, rng,
                                          anatomy.gain))


# ============================================================================ writing and caching


def _label_cell(value: int | None) -> str:
    return "" if value is None else f"{float(value):.1f}"


def generate_demo(target: str | os.PathLike[str], *, progress: bool = True) -> dict[str, Any]:
    """Write the whole demo dataset into ``target`` (created; must not exist yet) and return
    its manifest. Deterministic: the same files, byte for byte, on every call."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=False)
    plan: list[tuple[str, bool]] = []
    for split in ("train", "val", "test"):
        plan += [(split, False)] * SPLIT_SIZES[split] + [(split, True)] * EMPTY_FINDINGS[split]
    # Interleave the empty-findings studies deterministically instead of leaving them last.
    order = np.random.default_rng([DEMO_SEED, 1]).permutation(len(plan))
    plan = [plan[i] for i in order]
    annotation: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    label_rows: list[list[str]] = []
    box_rows: list[list[str]] = []
    for index, (split, empty) in enumerate(tqdm(plan, desc="generating demo dataset", unit="study",
                                                disable=None if progress else True)):
        study = _generate_study(index, split, empty)
        folder = target / "images" / study.dicom_id
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(study.frontal_png)
        (folder / "1.png").write_bytes(study.lateral_png)
        annotation[split].append({"id": study.dicom_id, "study_id": study.study_id, "subject_id": study.subject_id,
                                  "report": study.report,
                                  "image_path": [f"{study.dicom_id}/0.png", f"{study.dicom_id}/1.png"],
                                  "split": split})
        if study.labels is not None:
            label_rows.append([str(study.subject_id), str(study.study_id)]
                              + [_label_cell(study.labels[c]) for c in _CHEXPERT_CSV_ORDER])
        for finding in study.findings:
            for x1, y1, x2, y2, region in finding.boxes:
                box_rows.append([study.dicom_id, finding.cls, finding.sentence.rstrip("."),
                                 f"images/{study.dicom_id}/0.png", str(x1), str(y1), str(x2 - x1), str(y2 - y1),
                                 str(IMAGE_SIZE), str(IMAGE_SIZE), split, region])
    (target / ANNOTATION_FILE).write_text(json.dumps(annotation, indent=1) + "\n", encoding="utf-8")
    _write_csv(target / CHEXPERT_FILE, ["subject_id", "study_id", *_CHEXPERT_CSV_ORDER], label_rows)
    _write_csv(target / BOXES_FILE, [*MS_CXR_COLUMNS, "region"], box_rows)
    manifest = {"name": "demo", "version": DEMO_VERSION, "seed": DEMO_SEED, "image_size": IMAGE_SIZE,
                "studies": {s: SPLIT_SIZES[s] + EMPTY_FINDINGS[s] for s in SPLIT_SIZES},
                "empty_findings": dict(EMPTY_FINDINGS), "boxes": len(box_rows),
                "files": [ANNOTATION_FILE, CHEXPERT_FILE, BOXES_FILE, "images/"]}
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def default_cache_dir() -> Path:
    from boxmed_eval.paths import cache_root

    return cache_root() / "demo" / DEMO_VERSION


def _is_complete(root: Path) -> bool:
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    except (json.JSONDecodeError, AttributeError):
        version = None
    if version != DEMO_VERSION:
        raise DataError(f"holds a demo dataset of version {version!r}, this code writes {DEMO_VERSION!r}",
                        file=root, fix="delete that folder (it is regenerated) or pass another --data-root")
    return True


def demo_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the demo dataset, generating it there first if needed.

    ``cache_dir`` is the dataset folder itself (default: ``$BOXMED_CACHE/demo/<DEMO_VERSION>``
    or ``~/.cache/boxmed_eval/demo/<DEMO_VERSION>``); it must be missing, empty, or hold a demo dataset.
    Generation runs in a sibling temporary folder renamed into place, so a concurrent
    reader sees either no dataset or a complete one; when two processes race, the first
    rename wins and the other's copy is discarded.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = root.absolute()
    if _is_complete(root):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError("is not empty and holds no demo dataset", file=root,
                        fix="pass an empty or new folder as --data-root for the demo dataset, or none")
    root.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    started = time.perf_counter()
    try:
        log.info("generating the demo dataset into %s", root)
        generate_demo(temporary / "data")
        try:
            os.rename(temporary / "data", root)  # atomic; replaces an empty folder
        except OSError:
            if not _is_complete(root):  # not a concurrent generation that won the race
                raise
        log.info("demo dataset generated in %.1f s", time.perf_counter() - started)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return root


# ============================================================================ the adapter


@DATASETS.register("demo")
class Demo(DatasetAdapter):
    description = ("synthetic chest-radiograph-like studies (train 600 / val 60 / test 100, two views, CheXpert "
                   "labels, MS-CXR-style boxes), generated offline on first use in seconds")
    needs = (f"nothing: generated on first use into $BOXMED_CACHE/demo/{DEMO_VERSION} "
             f"(default ~/.cache/boxmed_eval/demo/{DEMO_VERSION}), "
             "or into --data-root DIR when that is empty")
    env_var = None
    report_words = 50  # measured: at most 45 words in train (v3)

    def _resolve_root(self, data_root: str | os.PathLike[str] | None) -> Path:
        return demo_root(data_root).resolve()

    def load(self, split: str = "test") -> list[Study]:
        split = self.check_split(split)
        root = self.data_root
        annotation = root / ANNOTATION_FILE
        labels = read_chexpert_labels(root / CHEXPERT_FILE, key_columns=("subject_id", "study_id"))
        boxes_file = root / BOXES_FILE
        rows_by_image = group_by_image(read_ms_cxr_csv(boxes_file))
        studies: list[Study] = []
        for entry_split, index, entry in read_r2gen_annotation(annotation):
            if entry_split != split:
                continue
            study_id, where = str(entry["id"]), f"{split}[{index}] (id {entry['id']})"
            images = [self.image_path(p, base=root / "images", file=annotation, record=where)
                      for p in entry["image_path"]]
            boxes: list[Box] = []
            for row in rows_by_image.get(study_id, []):
                box_image = self.image_path(row.path, file=boxes_file, record=f"line {row.line}")
                if row.split != split or box_image != images[0]:
                    raise DataError(f"box of {study_id!r} names split {row.split!r} and image {row.path!r}, but the "
                                    f"annotation has split {split!r} and frontal image {entry['image_path'][0]!r}",
                                    file=boxes_file, record=f"line {row.line}",
                                    fix="regenerate the demo dataset (delete its folder)")
                boxes.append(row.to_box())
            key = f"{entry.get('subject_id')}/{entry.get('study_id')}"
            meta = {"subject_id": str(entry.get("subject_id")), "study_id": str(entry.get("study_id")),
                    "dicom_id": study_id}
            studies.append(Study(id=study_id, image_paths=images, findings=prepare_findings(entry["report"]),
                                 split=split, labels=labels.get(key), boxes=boxes, meta=meta))
        return self.finish(studies, split, source=annotation)
