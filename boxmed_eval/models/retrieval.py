"""``retrieval``: a weights-free baseline. Each test image is matched to the nearest training
study by a downsampled-pixel embedding (cosine similarity of standardised thumbnails), and
that study's findings are returned, with its boxes (rescaled to the query image) when the
dataset has boxes, so the grounding metric has a weights-free floor too. It is the floor any
learned model should beat.

Phrase grounding (``run --task grounding``, :meth:`RetrievalBaseline.ground`): the query image is
embedded the same way and the ``ground_neighbours`` (default 5) most similar training images
that have boxes are taken. Among their phrases, the one sharing the most words with the query
phrase wins (Jaccard similarity of lower-cased word sets; ties go to the more similar image,
then to the phrase written first); its boxes, rescaled to the query image, are the answer.
When no neighbour's phrase shares a word, the nearest neighbour's first phrase is used. Each
box's score is ``jaccard * max(cosine, 0)`` (both in 0..1), so AP ranks confident matches
first."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.plugins import ReportGenerator, RunContext
from boxmed_eval.records import Box, Prediction, Study

if TYPE_CHECKING:
    from boxmed_eval.phrase_grounding import GroundingAnswer, GroundingQuery

log = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9]+")


def phrase_words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def image_embedding(paths: list[str], *, size: int = 32, views: int = 1) -> np.ndarray:
    """Concatenated, per-view standardised ``size``x``size`` grayscale thumbnails, L2-normalised."""
    parts = []
    for index in range(views):
        path = paths[min(index, len(paths) - 1)]  # a study with fewer views repeats its first
        try:
            with Image.open(path) as image:
                thumb = np.asarray(image.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image ({exc})", file=path, fix="check the image file") from None
        thumb = (thumb - thumb.mean()) / (thumb.std() + 1e-6)
        parts.append(thumb.ravel())
    vector = np.concatenate(parts)
    return vector / (np.linalg.norm(vector) + 1e-12)


class RetrievalBaseline(ReportGenerator):
    description = "Nearest training study by downsampled-pixel image embedding; returns its findings (no weights)"
    needs = "the dataset's train split with images (nothing to download)"
    arguments = {"size": "thumbnail side in pixels (default 32)",
                 "views": "number of views concatenated (default 1: frontal)",
                 "train_split": "split to retrieve from (default train)",
                 "max_train": "use at most this many training studies (default all)",
                 "boxes": "return the retrieved study's boxes, rescaled to the query image (default true)",
                 "ground_neighbours": "grounding task: training images searched for the phrase (default 5)"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(kwargs.get("size", 32))
        self.views = int(kwargs.get("views", 1))
        self.train_split = str(kwargs.get("train_split", "train"))
        self.max_train = kwargs.get("max_train")
        self.return_boxes = bool(kwargs.get("boxes", True))
        self.ground_neighbours = int(kwargs.get("ground_neighbours", 5))
        if self.ground_neighbours < 1:
            raise BoxmedError(f"--model-arg ground_neighbours={self.ground_neighbours}: must be at least 1")
        self.bank: np.ndarray | None = None
        self.bank_ids: list[str] = []
        self.bank_index: dict[str, int] = {}
        self.bank_reports: list[str] = []
        self.bank_boxes: list[list[Box]] = []

    def setup(self, context: RunContext) -> None:
        if context.dataset is None:
            raise BoxmedError("model 'retrieval' needs a dataset with a train split (use `boxmed-eval run`)")
        train = context.dataset.load(self.train_split)
        if self.max_train is not None:
            train = train[: int(self.max_train)]
        if not train:
            raise BoxmedError(f"model 'retrieval': split {self.train_split!r} of the dataset is empty")
        vectors = [image_embedding(s.image_paths, size=self.size, views=self.views)
                   for s in tqdm(train, desc="retrieval: index train images", unit="image", disable=None)]
        self.bank = np.stack(vectors)
        self.bank_ids = [s.id for s in train]
        self.bank_index = {study_id: j for j, study_id in enumerate(self.bank_ids)}
        self.bank_reports = [s.findings for s in train]
        self.bank_boxes = [s.boxes for s in train]

    def generate(self, studies: list[Study]) -> list[Prediction]:
        if self.bank is None:
            raise BoxmedError("model 'retrieval' was not set up (setup() indexes the training images)")
        queries = np.stack([image_embedding(s.image_paths, size=self.size, views=self.views) for s in studies])
        similarity = queries @ self.bank.T
        for row, study in enumerate(studies):  # never retrieve the study itself
            if study.id in self.bank_index:
                similarity[row, self.bank_index[study.id]] = -np.inf
        nearest = similarity.argmax(axis=1)
        return [Prediction(id=s.id, report=self.bank_reports[j],
                           boxes=self._boxes_for(s, self.bank_boxes[j]) if self.return_boxes else [])
                for s, j in zip(studies, nearest)]

    def ground(self, queries: list["GroundingQuery"]) -> list["GroundingAnswer"]:
        """The phrase's boxes on the most similar training images (module docstring)."""
        from boxmed_eval.phrase_grounding import GroundingAnswer

        if self.bank is None:
            raise BoxmedError("model 'retrieval' was not set up (setup() indexes the training images)")
        with_boxes = np.array([bool(boxes) for boxes in self.bank_boxes])
        if not with_boxes.any():
            raise BoxmedError(f"model 'retrieval': no study of split {self.train_split!r} has boxes to retrieve")
        answers = []
        for query in queries:
            vector = image_embedding([query.image_path], size=self.size, views=1) if self.views == 1 else \
                image_embedding(query.image_paths, size=self.size, views=self.views)
            similarity = self.bank @ vector
            similarity[~with_boxes] = -np.inf
            if query.study_id in self.bank_index:  # never the study itself
                similarity[self.bank_index[query.study_id]] = -np.inf
            ranked = [int(j) for j in np.argsort(-similarity, kind="stable")[: self.ground_neighbours]
                      if np.isfinite(similarity[j])]
            if not ranked:
                answers.append(GroundingAnswer(query.id, []))
                continue
            words = phrase_words(query.phrase)
            best: tuple[float, int, str] | None = None  # (jaccard, neighbour, phrase)
            for j in ranked:
                for phrase in dict.fromkeys(b.phrase for b in self.bank_boxes[j]):
                    overlap = jaccard(words, phrase_words(phrase))
                    if best is None or overlap > best[0]:
                        best = (overlap, j, phrase)
            assert best is not None
            overlap, j, phrase = best
            if overlap == 0.0:
                j, phrase = ranked[0], self.bank_boxes[ranked[0]][0].phrase
            score = overlap * max(float(similarity[j]), 0.0)
            chosen = [b for b in self.bank_boxes[j] if b.phrase == phrase]
            boxes = self._rescaled(chosen, query.image_path, query.image_width, query.image_height)
            for box in boxes:
                box.score = score
                box.image_index = query.image_index
            answers.append(GroundingAnswer(query.id, boxes))
        return answers

    @staticmethod
    def _rescaled(boxes: list[Box], image_path: str, width: int | None, height: int | None) -> list[Box]:
        if not width or not height:
            with Image.open(image_path) as image:
                width, height = image.size
        out = []
        for box in boxes:
            sx = width / box.image_width if box.image_width else 1.0
            sy = height / box.image_height if box.image_height else 1.0
            out.append(Box(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy, phrase=box.phrase, category=box.category,
                           region=box.region, image_width=width, image_height=height))
        return out

    @staticmethod
    def _boxes_for(study: Study, boxes: list[Box]) -> list[Box]:
        """The retrieved boxes in the query image's pixels (same relative position)."""
        out = []
        for box in boxes:
            if box.image_index != 0 or not box.image_width or not box.image_height:
                continue
            with Image.open(study.image_paths[0]) as image:
                width, height = image.size
            sx, sy = width / box.image_width, height / box.image_height
            out.append(Box(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy, phrase=box.phrase,
                           category=box.category, region=box.region, image_width=width, image_height=height))
        return out

    def provenance(self) -> dict[str, Any]:
        return {"train_split": self.train_split, "n_train": len(self.bank_ids), "size": self.size, "views": self.views}
