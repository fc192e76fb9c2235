"""Images and batches as R2Gen prepares them, with PIL + numpy instead of torchvision.

- evaluation: ``Resize((224, 224))`` (aspect ratio not kept), ImageNet mean/std;
- training: ``Resize(256)`` (shorter side), ``RandomCrop(224)``, ``RandomHorizontalFlip``,
  same normalisation. Other ``image_size`` values scale the 256 by the same ratio.
- IU X-Ray studies give two views (the first two image paths; a study with one image repeats
  it), MIMIC-CXR the first image only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from boxmed_eval.errors import DataError
from boxmed_eval.records import Study
from plugins.r2gen.tokenizer import R2GenTokenizer

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _open_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", file=path, fix="check the image file") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def resized_image(path: str, image_size: int = 224, *, train: bool = False) -> Image.Image:
    """The deterministic part of the transform: (S, S) for evaluation; shorter side
    S * 256 / 224 for training (cropped at random afterwards)."""
    image = _open_rgb(path)
    if not train:
        return image.resize((image_size, image_size), Image.BILINEAR)
    shorter = round(image_size * 256 / 224)
    width, height = image.size
    scale = shorter / min(width, height)
    new_w, new_h = max(image_size, round(width * scale)), max(image_size, round(height * scale))
    return image.resize((new_w, new_h), Image.BILINEAR)


def load_image(path: str, image_size: int = 224, *, train: bool = False, rng: random.Random | None = None,
               resized: Image.Image | None = None) -> torch.Tensor:
    """(3, image_size, image_size) float tensor, normalised with ImageNet statistics.
    ``resized``: the output of ``resized_image`` for this path, when cached."""
    image = resized if resized is not None else resized_image(path, image_size, train=train)
    if not train:
        return _to_tensor(image)
    rng = rng or random.Random()
    new_w, new_h = image.size
    left, top = rng.randint(0, new_w - image_size), rng.randint(0, new_h - image_size)
    image = image.crop((left, top, left + image_size, top + image_size))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return _to_tensor(image)


def study_views(study: Study, dataset_name: str) -> list[str]:
    if not study.image_paths:
        raise DataError("study has no image", record=study.id, fix="R2Gen needs at least one image per study")
    if dataset_name == "iu_xray":
        return [study.image_paths[0], study.image_paths[1 if len(study.image_paths) > 1 else 0]]
    return [study.image_paths[0]]


def study_images(study: Study, dataset_name: str, image_size: int, *, train: bool = False,
                 rng: random.Random | None = None) -> torch.Tensor:
    """(views, 3, S, S) for one study."""
    return torch.stack([load_image(p, image_size, train=train, rng=rng) for p in study_views(study, dataset_name)])


def batch_images(studies: Sequence[Study], dataset_name: str, image_size: int) -> torch.Tensor:
    """(B, views, 3, S, S) evaluation-transformed images."""
    return torch.stack([study_images(s, dataset_name, image_size) for s in studies])


class ReportDataset(Dataset):
    """(images, token ids) pairs; ids truncated to ``max_seq_length`` as upstream (which can
    cut off the final eos of a long report)."""

    def __init__(self, studies: Sequence[Study], tokenizer: R2GenTokenizer, *, max_seq_length: int,
                 image_size: int, train: bool, seed: int = 0, cache_images: bool = False) -> None:
        self.studies = list(studies)
        # Decoding and resizing dominate small models' epochs; the cache keeps the resized
        # images in memory (about 3 * (S * 256/224)^2 bytes each: for small datasets only).
        self.cache: dict[str, Image.Image] | None = {} if cache_images else None
        self.tokenizer = tokenizer
        self.ids = [tokenizer.encode(s.findings)[:max_seq_length] for s in self.studies]
        self.image_size = image_size
        self.train = train
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int]]:
        study = self.studies[index]
        if self.cache is None:
            images = study_images(study, self.tokenizer.dataset_name, self.image_size, train=self.train, rng=self.rng)
        else:
            views = []
            for path in study_views(study, self.tokenizer.dataset_name):
                if path not in self.cache:
                    self.cache[path] = resized_image(path, self.image_size, train=self.train)
                views.append(load_image(path, self.image_size, train=self.train, rng=self.rng,
                                        resized=self.cache[path]))
            images = torch.stack(views)
        return images, self.ids[index]


def collate(batch: list[tuple[torch.Tensor, list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images (B, views, 3, S, S), ids (B, T) 0-padded, mask (B, T) 1 over each report's ids."""
    images = torch.stack([b[0] for b in batch])
    length = max(len(b[1]) for b in batch)
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    mask = torch.zeros(len(batch), length)
    for row, (_, token_ids) in enumerate(batch):
        ids[row, :len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
        mask[row, :len(token_ids)] = 1
    return images, ids, mask


def language_model_loss(log_probs: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Upstream's ``compute_loss``: mean negative log-likelihood of ids[:, 1:] over mask[:, 1:]."""
    target, target_mask = ids[:, 1:], mask[:, 1:]
    nll = -log_probs.gather(2, target.unsqueeze(2)).squeeze(2) * target_mask
    return nll.sum() / target_mask.sum()
