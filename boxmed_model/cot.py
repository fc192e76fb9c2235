"""The CoT builder of medical concept learning (paper Sec. 3.2.1, Fig. 4a).

A findings report is split into sentences; each disease mention of a sentence becomes
its own chain ``Finding -> [Concept ->] Disease category -> Anatomical region`` (plus the
box when the study has a box whose phrase belongs to that sentence). Mentions come from
the project's rule-based CheXpert labeler and the expert finding -> disease mappings of
:data:`boxmed_model.knowledge.EXPERT_FINDINGS` ("lungs are low in volume" -> volume loss
-> Atelectasis, "sternotomy wires" -> post-surgical hardware -> Support Devices), see
:func:`boxmed_model.knowledge.find_mentions`. Each chain's region is the anatomy-lexicon
match nearest to its mention in the text ("lungs are clear except for left lower lobe
consolidation" -> Consolidation -> left lung), a box's own region winning when the
dataset gives one. A sentence without any mention is one ``No Finding`` chain.

The finding text of a chain is its sentence when the sentence has one chain, else the
mention's clause, or the mention's list item when several mentions share a clause
("No pneumothorax, pleural effusion, or focal consolidation" -> three chains).

Rendered target (what MCL trains on, one line per chain)::

    <think>
    Finding: Mild cardiomegaly. -> Disease: Cardiomegaly -> Anatomy: cardiac silhouette -> Box: (310,420),(760,800)
    Finding: Lungs are low in volume. -> Concept: volume loss -> Disease: Atelectasis -> Anatomy: whole lung
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
    concept: str | None = None  # intermediate concept between finding and disease ("volume loss")
    sentence: str = ""  # the report sentence the chain comes from (box placement); finding when empty

    def render(self) -> str:
        concept = f" -> Concept: {self.concept}" if self.concept else ""
        line = (f"Finding: {self.finding}{concept} -> Disease: {', '.join(self.diseases)} "
                f"-> Anatomy: {', '.join(self.regions)}")
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


# List joints inside a clause; "consistent/compatible with" continues the item.
_ITEM_SPLIT = re.compile(r",\s*(?:and\s+|or\s+|nor\s+)?|\s+(?:and|or|nor)\s+|(?<!consistent)(?<!compatible)\s+with\s+")
_HAS_NEGATION = re.compile(r"\b(?:no|not|without|negative|free|absence|resolved|removed|normal|unremarkable|clear)\b")
_HAS_HEDGE = re.compile(r"\b(?:may|might|could|possible|possibly|probabl\w*|likely|suggest\w*|concern\w*|"
                        r"questionable|versus|suspicious|excluded|borderline)\b")


def _piece(sentence: str, text: str, start: int, end: int) -> str:
    """``sentence[start:end]`` in its own casing when cleaning kept the length (the usual
    case), else the cleaned lower-case text; capitalised, outer punctuation trimmed."""
    source = sentence if len(sentence) == len(text) else text
    piece = source[start:end].strip(" ,;:")
    piece = re.sub(r"^(?:and|or|but|with|except(?: for)?|however|which|although|though|whereas)\s+", "", piece,
                   flags=re.IGNORECASE).strip(" ,;:")
    # a clause cut after the labeler's "there" boundary starts with its verb ("is no pneumothorax")
    piece = re.sub(r"^(?:there\s+)?(?:is|are)\s+(?=\w)", "", piece, flags=re.IGNORECASE)
    return piece[:1].upper() + piece[1:] if piece else piece


def _item_span(text: str, clause: tuple[int, int], start: int, end: int) -> tuple[int, int]:
    """The list item of a clause holding ``text[start:end]`` (split at commas, and/or/with)."""
    item_start, item_end = clause
    for match in _ITEM_SPLIT.finditer(text, clause[0], clause[1]):
        if match.end() <= start:
            item_start = match.end()
        elif match.start() >= end:
            item_end = match.start()
            break
    return item_start, item_end


def sentence_chains(sentence: str) -> list[Chain]:
    """The chains of one sentence: one per disease mention, or one ``No Finding`` chain."""
    text, mentions = knowledge.find_mentions(sentence)
    if not mentions:
        return [Chain(finding=sentence, diseases=["No Finding"], regions=list(knowledge.regions_for(sentence)),
                      sentence=sentence)]
    single = len(mentions) == 1
    per_clause: dict[tuple[int, int], int] = {}
    for mention in mentions:
        per_clause[mention.clause] = per_clause.get(mention.clause, 0) + 1
    chains = []
    for mention in mentions:
        if single:
            finding = sentence
        elif per_clause[mention.clause] == 1:
            finding = _piece(sentence, text, *mention.clause)
        else:
            item = _item_span(text, mention.clause, mention.start, mention.end)
            finding = _piece(sentence, text, *item)
            cue = {0: _HAS_NEGATION, -1: _HAS_HEDGE}.get(mention.label)
            if cue is not None and not cue.search(text[mention.clause[0]:mention.start]):
                # the cue follows the mention: its item when it carries the cue ("heart size is
                # normal and ..."), else the whole clause ("X and Y are within normal limits")
                if not cue.search(finding.lower()):
                    finding = _piece(sentence, text, *mention.clause)
            elif cue is not None and not cue.search(finding.lower()):
                # a list item under a leading cue ("no X, Y, or Z") reads as its own statement
                finding = ("No " if mention.label == 0 else "Possible ") + finding[:1].lower() + finding[1:]
        chains.append(Chain(finding=finding or sentence,
                            diseases=[f"{mention.disease}{_STATUS[mention.label]}"],
                            regions=list(knowledge.mention_region(text, mention)),
                            concept=mention.concept, sentence=sentence))
    return chains


def _box_target(box: Box, chains: list[Chain]) -> Chain | None:
    """The chain a box belongs to: among the chains of the box phrase's sentence, the one of
    the box's category, else a present (not absent) one, else the first."""
    candidates = [c for c in chains if _box_belongs(box, c.sentence or c.finding)]
    if not candidates:
        return None
    for chain in candidates:
        if box.category and any(d.split(" (")[0] == box.category for d in chain.diseases):
            return chain
    return next((c for c in candidates if not all(d.endswith("(absent)") for d in c.diseases)), candidates[0])


def build_chains(study: Study, *, image_size: tuple[int, int] | None = None) -> list[Chain]:
    """The chains of one study. ``image_size`` (width, height) of the image the boxes are
    drawn on is needed only when a box lacks ``image_width``/``image_height``.

    Boxes whose phrase is not a substring of any sentence become chains of their own
    (MS-CXR phrases are often not verbatim report sentences).
    """
    chains = [chain for sentence in split_sentences(study.findings) for chain in sentence_chains(sentence)]
    for box in study.boxes:
        width = box.image_width or (image_size[0] if image_size else None)
        height = box.image_height or (image_size[1] if image_size else None)
        if not width or not height:
            continue  # cannot normalise: the box is left out of the target
        corners = to_qwen((box.x1, box.y1, box.x2, box.y2), width, height)
        target = _box_target(box, chains)
        if target is None:
            phrase = normalize_text(box.phrase) or box.category
            own = sentence_chains(phrase) if phrase else []
            # the phrase's own chain (its category's when it has several mentions)
            target = next((c for c in own if box.category and c.diseases[0].split(" (")[0] == box.category),
                          own[0] if own else Chain(finding=phrase, diseases=["No Finding"], regions=[knowledge.DEFAULT_REGION]))
            target.finding, target.sentence = phrase, phrase
            chains.append(target)
        target.boxes.append(corners)
        if box.category and box.category in knowledge.DISEASE_CATEGORIES and box.category not in target.diseases:
            target.diseases = [d for d in target.diseases if d != "No Finding"] + [box.category]
        if box.region and box.region in knowledge.ANATOMICAL_REGIONS:
            target.regions = [box.region] if not target.boxes[:-1] else sorted(set(target.regions) | {box.region})
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
    chains = sentence_chains(normalize_text(phrase))
    return "\n".join(chain.render() for chain in chains)
