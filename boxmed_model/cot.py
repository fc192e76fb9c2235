"""The CoT builder of medical concept learning (paper Sec. 3.2.1, Fig. 4a).

A findings report is split into sentences; each sentence becomes one chain
``Finding -> Disease category -> Anatomical region`` (plus the box when the study has a
box whose phrase belongs to that sentence). Diseases come from the project's rule-based
CheXpert labeler (:func:`boxmed_model.knowledge.label_sentences`), regions from the
anatomy lexicon (:func:`boxmed_model.knowledge.regions_for`; a box's own region wins when
the dataset gives one).

Rendered target (what MCL trains on, one line per chain)::

    <think>
    Finding: Mild cardiomegaly. -> Disease: Cardiomegaly -> Anatomy: cardiac silhouette -> Box: (310,420),(760,800)
    Finding: No pneumothorax. -> Disease: Pneumothorax (absent) -> Anatomy: whole lung
    </think>
    <answer>Mild cardiomegaly. No pneumothorax.</answer>

Disease status: a positive mention is written as the class name, an uncertain one as
``Name (uncertain)``, a negated one as ``Name (absent)``; a sentence with no pathology
mention is ``No Finding``. Boxes are Qwen2-VL 0..1000 coordinates of the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from boxmed_eval.records import Box, Study
from boxmed_eval.text import normalize_text
from boxmed_model import knowledge
from boxmed_model.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from boxmed_model.rewards import format_box, to_qwen

# Sentence ends: a period/?/! followed by space and a capital or digit, or end of text.
# Keeps "3.5 cm" and "Dr. X" style abbreviations joined well enough for report prose.
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|(?<=[a-z][.!?])(?=[A-Z][a-z])")
_STATUS = {1: "", -1: " (uncertain)", 0: " (absent)"}


@dataclass
class Chain:
    """One reasoning chain: a finding sentence, its disease categories and its regions."""

    finding: str
    diseases: list[str]
    regions: list[str]
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # 0..1000 corners

    def render(self) -> str:
        line = f"Finding: {self.finding} -> Disease: {', '.join(self.diseases)} -> Anatomy: {', '.join(self.regions)}"
        if self.boxes:
            line += " -> Box: " + " ".join(format_box(b) for b in self.boxes)
        return line


def split_sentences(text: str) -> list[str]:
    """Findings text -> sentences (whitespace normalised, empty pieces dropped)."""
    text = normalize_text(text)
    return [s.strip() for s in _SENTENCE_RE.split(text) if s.strip() and re.search(r"[A-Za-z]", s)]


def diseases_from_labels(labels: dict[str, int | None]) -> list[str]:
    """Labels of one sentence -> the disease strings of its chain (see module docstring)."""
    named = [f"{name}{_STATUS[value]}" for name, value in labels.items()
             if name != "No Finding" and value in _STATUS]
    # Only pathologies (not devices) decide whether the sentence is a normal finding.
    if not any(v in (1, -1) for k, v in labels.items() if k not in ("No Finding", "Support Devices")):
        if not any(labels.get("Support Devices") == v for v in (1, -1)):
            named = [n for n in named if n.endswith("(absent)")] or []
            return named or ["No Finding"]
    return named


def _box_belongs(box: Box, sentence: str) -> bool:
    phrase = normalize_text(box.phrase).lower().strip(" .")
    return bool(phrase) and (phrase in sentence.lower() or sentence.lower().strip(" .") in phrase)


def build_chains(study: Study, *, image_size: tuple[int, int] | None = None) -> list[Chain]:
    """The chains of one study. ``image_size`` (width, height) of the image the boxes are
    drawn on is needed only when a box lacks ``image_width``/``image_height``.

    Boxes whose phrase is not a substring of any sentence become chains of their own
    (MS-CXR phrases are often not verbatim report sentences).
    """
    sentences = split_sentences(study.findings)
    labels = knowledge.label_sentences(sentences) if sentences else []
    chains = [Chain(finding=s, diseases=diseases_from_labels(lab), regions=list(knowledge.regions_for(s)))
              for s, lab in zip(sentences, labels)]
    unplaced: list[Box] = []
    for box in study.boxes:
        width = box.image_width or (image_size[0] if image_size else None)
        height = box.image_height or (image_size[1] if image_size else None)
        if not width or not height:
            continue  # cannot normalise: the box is left out of the target
        corners = to_qwen((box.x1, box.y1, box.x2, box.y2), width, height)
        target = next((c for c in chains if _box_belongs(box, c.finding)), None)
        if target is None:
            unplaced.append(box)
            target = Chain(finding=normalize_text(box.phrase) or box.category, diseases=[], regions=[])
            chains.append(target)
        target.boxes.append(corners)
        if box.category and box.category in knowledge.DISEASE_CATEGORIES and box.category not in target.diseases:
            target.diseases = [d for d in target.diseases if d != "No Finding"] + [box.category]
        if box.region and box.region in knowledge.ANATOMICAL_REGIONS:
            target.regions = [box.region] if not target.boxes[:-1] else sorted(set(target.regions) | {box.region})
    for chain in chains:
        if not chain.diseases:
            chain.diseases = diseases_from_labels(knowledge.label_sentences([chain.finding])[0])
        if not chain.regions:
            chain.regions = list(knowledge.regions_for(chain.finding))
    return chains


def render_reasoning(chains: list[Chain]) -> str:
    return "\n".join(chain.render() for chain in chains)


def render_target(chains: list[Chain], findings: str) -> str:
    """The MCL target text: chains in ``<think>``, the findings text in ``<answer>``."""
    return (f"{THINK_OPEN}\n{render_reasoning(chains)}\n{THINK_CLOSE}\n"
            f"{ANSWER_OPEN}{normalize_text(findings)}{ANSWER_CLOSE}")


def render_svr_think(phrase: str) -> str:
    """The reasoning an SVR answer starts from (the chain of the phrase, without its box):
    used to show the expected format in documentation and tests."""
    labels = knowledge.label_sentences([phrase])[0]
    return Chain(phrase, diseases_from_labels(labels), list(knowledge.regions_for(phrase))).render()
