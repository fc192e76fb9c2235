"""Sentence entailment for the RadFact-style metrics: does a report (the premises) entail a
sentence (the hypothesis)? Two judges answer it.

**rules** (deterministic, no model). Each sentence becomes *statements*
``(observation, polarity, extent, side)``: the CheXpert observations the project's rule-based
labeler finds in it (with the expert mappings of :func:`boxmed_model.knowledge.find_mentions`),
positive (1), uncertain (-1) or negated (0), and where: the anatomical region(s) nearest to the
mention (:func:`boxmed_model.knowledge.mention_region`) as a set of atoms (left/right apex,
hilum, upper, mid and lower zone of each lung, narrowed by zone words such as "base" or
"middle lobe"; heart; mediastinum; trachea; spine; abdomen; bones) and the side
(left, right, both or unsaid). A sentence without any mention is one ``No Finding``
statement ("The lungs are clear.") about the regions it names when it reads as normal (a
normal-sounding word: clear, normal, intact, no...), else an *other finding* ("Degenerative
changes of the spine.", "A foreign body over the left chest.") that only an identical sentence
entails; a normal sentence about the pulmonary vessels is about the vessels, not the lungs.
A hypothesis is entailed when its normalised text equals a premise sentence, or when **every**
statement of it is supported by a statement of some premise sentence; the premise sentences
that support it are its evidence. A premise statement supports a hypothesis statement when:

- polarity is the same (an uncertain finding neither entails nor is entailed by a definite one);
- the observation is the same, or for a positive / uncertain statement the premise names a
  child of the hypothesis's observation in the CheXpert hierarchy (consolidation, pneumonia,
  edema, atelectasis, lung lesion -> lung opacity; cardiomegaly -> enlarged
  cardiomediastinum; the enlarged cardiomediastinum's place is heart and mediastinum however
  the sentence names it), or for a negated one the premise negates its parent; a ``No Finding``
  statement about the lungs ("lungs are clear") supports the negation of lung opacity and its
  children there;
- the place agrees. Positive / uncertain: the premise's finding lies inside the place the
  hypothesis names (``left lower lobe opacity`` entails ``opacity``, not the reverse); a
  bilateral finding supports a one-sided or unsided hypothesis whose place holds the premise's
  part of that side ("bibasilar opacities" entails "left basilar opacity"), and only a
  bilateral premise supports a bilateral hypothesis. Negated / ``No Finding``: the
  hypothesis's place lies inside the premise's (``no pneumothorax`` entails ``no left
  pneumothorax``, not the reverse). Left and right never support each other.

Severity (small / moderate / large, read from the words next to a mention) must agree when the
hypothesis states one ("small left effusion" entails "left effusion", not "moderate left
effusion"). Change over time ("new", "persistent", "increased") is not compared.

**llm**: RadFact's entailment-verification prompt (its system message and its 10 few-shot
examples turned into single-phrase human/assistant turns, statuses made binary, every turn a
YAML dump of the query ``reference`` + ``hypothesis`` or of the answer ``phrase`` +
``evidence`` + ``status``), sent through the project's judge backends (local or
OpenAI-compatible, cached, PHI guard) as one chat conversation; the reply is parsed the way
RadFact's LangChain ``YamlOutputParser`` and pydantic schema do (see
:func:`parse_entailment_reply`). The few-shot data is ``radfact_few_shot.json`` (MIT, kept
verbatim so that the prompt equals RadFact's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

ENTAILMENT = "entailment"
NOT_ENTAILMENT = "not_entailment"

# ----------------------------------------------------------------------------- regions as atoms

_ZONES = ("upper", "mid", "lower", "hilum")
_SIDE_ATOMS = {side: frozenset(f"{side} {zone}" for zone in _ZONES) for side in ("left", "right")}
LUNG_ATOMS = _SIDE_ATOMS["left"] | _SIDE_ATOMS["right"]
REGION_ATOMS: dict[str, frozenset[str]] = {
    "left apical zone": frozenset({"left upper"}),
    "right apical zone": frozenset({"right upper"}),
    "left hilar structures": frozenset({"left hilum"}),
    "right hilar structures": frozenset({"right hilum"}),
    "left lung": _SIDE_ATOMS["left"],
    "right lung": _SIDE_ATOMS["right"],
    "whole lung": LUNG_ATOMS,
    "cardiac silhouette": frozenset({"heart"}),
    "mediastinum": frozenset({"mediastinum"}),
    "trachea": frozenset({"trachea"}),
    "spine": frozenset({"spine"}),
    "abdomen": frozenset({"abdomen"}),
}
# Zone words that narrow a statement about a whole lung (or both) to part of it: the region
# lexicon maps "right middle lobe" and "right lung base" alike to the right lung.
_ZONE_WORDS = {
    "lower": re.compile(r"\b(?:bases?|basilar|basal|bibasilar|bibasal|lower\s+lobes?|lower\s+lungs?|lower\s+zones?|"
                        r"costophrenic|infrahilar|retrocardiac)\b"),
    "mid": re.compile(r"\b(?:middle\s+lobe|mid[\s-]?lungs?|mid[\s-]?zones?|lingula\w*)\b"),
    "upper": re.compile(r"\b(?:upper\s+lobes?|upper\s+lungs?|upper\s+zones?|apex|apices|apical)\b"),
}
UNSPECIFIED = frozenset({"unspecified"})  # a normal sentence that names no place we know

_BILATERAL = re.compile(r"\b(?:bilateral(?:ly)?|both|bibasilar|bibasal|bi-?apical|biapical)\b")
_LEFT_WORD = re.compile(r"\bleft\b")
_RIGHT_WORD = re.compile(r"\bright\b")
_CARDIOPULMONARY = re.compile(r"\bcardiopulmonary\b|\bheart and lungs\b|\blungs and heart\b")
_BONES = re.compile(r"\b(?:osseous|bony|bones?|skeletal|skeleton|ribs?)\b")
# "Pulmonary vascularity is normal" is about the vessels, not a claim that the lungs are clear.
_VESSELS = re.compile(r"\b(?:vascularity|vasculature|vascular|vessels?)\b")
_CARDIOMEDIASTINUM = frozenset({"heart", "mediastinum"})
# A sentence without a CheXpert mention is a normal statement only when it reads as one; else
# it reports something the labeler does not cover (a foreign body, degenerative change, a
# tortuous aorta), which only the same sentence entails.
_READS_NORMAL = re.compile(r"\b(?:clear|normal|unremarkable|intact|negative|no|not|without|free|midline|"
                           r"expanded|aerated|inflated)\b")  # not "stable": a stable nodule is not normal
OTHER_FINDING = "Other finding"
SEVERITY_WORDS: dict[str, re.Pattern[str]] = {
    "small": re.compile(r"^(?:tiny|small|trace|minimal|minimally|mild|mildly|slight|slightly|subtle)$"),
    "moderate": re.compile(r"^(?:moderate|moderately)$"),
    "large": re.compile(r"^(?:large|larger|severe|severely|massive|extensive|marked|markedly|huge)$"),
}
_WORD = re.compile(r"[a-z]+")
_LIST_JOINT = re.compile(r",|;|\b(?:or|and|nor|with)\b")


def severity_near(text: str, start: int, end: int, clause: tuple[int, int]) -> str | None:
    """The severity a mention's neighbours state: the nearest severity word among the four words
    before it in its list item ("small left pleural effusion"), else among the three after it
    ("heart size is mildly enlarged")."""
    # within the mention's list item: "no pneumothorax or large effusion" is no large pneumothorax
    before_text = _LIST_JOINT.split(text[clause[0]:start].lower())[-1]
    after_text = _LIST_JOINT.split(text[end:clause[1]].lower())[0]
    before = _WORD.findall(before_text)[-4:]
    after = _WORD.findall(after_text)[:3]
    for words in (reversed(before), after):
        for word in words:
            for name, pattern in SEVERITY_WORDS.items():
                if pattern.match(word):
                    return name
    return None


# CheXpert hierarchy (child -> parent), as the CheXpert paper draws it.
PARENT: dict[str, str] = {
    "Consolidation": "Lung Opacity", "Pneumonia": "Lung Opacity", "Edema": "Lung Opacity",
    "Atelectasis": "Lung Opacity", "Lung Lesion": "Lung Opacity", "Cardiomegaly": "Enlarged Cardiomediastinum",
}
# What "the lungs are clear" also denies (parenchymal findings; not the pleura).
_CLEAR_LUNG_DENIES = frozenset({"Lung Opacity", "Consolidation", "Pneumonia", "Edema", "Atelectasis", "Lung Lesion"})
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class Statement:
    """One claim of a sentence: an observation, its polarity (1 / 0 / -1), where (a set of
    region atoms) and on which side (``left`` / ``right`` / ``both`` / ``None``)."""

    observation: str
    polarity: int
    extent: frozenset[str]
    side: str | None
    regions: tuple[str, ...] = ()
    severity: str | None = None  # small / moderate / large, when the words next to the mention say


def side_of(regions: Sequence[str], clause: str = "") -> str | None:
    """``left`` / ``right`` / ``both`` / ``None`` for a statement about ``regions``; an unsided
    whole-lung region is ``both`` when its clause says bilateral ("bibasilar atelectasis")."""
    left = any(r.startswith("left") for r in regions)
    right = any(r.startswith("right") for r in regions)
    if left and right:
        return "both"
    if left:
        return "left"
    if right:
        return "right"
    lowered = clause.lower()
    if "whole lung" in regions and _BILATERAL.search(lowered):
        return "both"
    if "whole lung" in regions:
        # a side the region lexicon could not tie to a lung part ("posterior left 4th, 5th
        # and 6th ribs") still says which side, when the clause names only one
        left_word, right_word = bool(_LEFT_WORD.search(lowered)), bool(_RIGHT_WORD.search(lowered))
        if left_word != right_word:
            return "left" if left_word else "right"
    return None


def _extent(regions: Sequence[str], clause: str = "") -> frozenset[str]:
    atoms: set[str] = set()
    for region in regions:
        atoms |= REGION_ATOMS.get(region, UNSPECIFIED)
    if atoms and atoms <= LUNG_ATOMS and all(region in ("left lung", "right lung", "whole lung") for region in regions):
        zones = {zone for zone, pattern in _ZONE_WORDS.items() if pattern.search(clause.lower())}
        if zones:
            atoms = {atom for atom in atoms if atom.split(" ", 1)[1] in zones}
    return frozenset(atoms) or UNSPECIFIED


@lru_cache(maxsize=65536)
def sentence_statements(sentence: str) -> tuple[Statement, ...]:
    """The statements of one sentence (see the module docstring)."""
    from boxmed_model import knowledge

    text, mentions = knowledge.find_mentions(sentence)
    if not mentions:
        lowered = text.lower()
        if not _READS_NORMAL.search(lowered):
            return (Statement(OTHER_FINDING, 1, UNSPECIFIED, None, ()),)
        if _VESSELS.search(lowered) and not _CARDIOPULMONARY.search(lowered):
            return (Statement(NO_FINDING, 0, frozenset({"pulmonary vessels"}), None, ()),)
        if _CARDIOPULMONARY.search(lowered):
            regions: tuple[str, ...] = ("whole lung", "cardiac silhouette")
        elif knowledge.region_matches(text):
            regions = tuple(knowledge.regions_for(text))
        elif _BONES.search(lowered):
            return (Statement(NO_FINDING, 0, frozenset({"bones"}), None, ()),)
        else:
            return (Statement(NO_FINDING, 0, UNSPECIFIED, None, ()),)
        return (Statement(NO_FINDING, 0, _extent(regions, text), side_of(regions, text), regions),)
    found = []
    for mention in mentions:
        regions = tuple(knowledge.mention_region(text, mention))
        clause = text[mention.clause[0]:mention.clause[1]] if mention.clause != (0, 0) else text
        side = side_of(regions, clause)
        extent = _extent(regions, clause)
        if side in _SIDE_ATOMS and extent == _extent(("whole lung",), clause):
            extent = extent & _SIDE_ATOMS[side]  # the side found in the words narrows the whole lung
        if mention.disease == "Enlarged Cardiomediastinum" and extent <= _CARDIOMEDIASTINUM:
            # the cardiomediastinal silhouette is heart and mediastinum, however the sentence names it
            extent = _CARDIOMEDIASTINUM
        bounds = mention.clause if mention.clause != (0, 0) else (0, len(text))
        found.append(Statement(mention.disease, int(mention.label), extent, side, regions,
                               severity_near(text, mention.start, mention.end, bounds)))
    return tuple(found)


def _observation_supports(hyp: Statement, prem: Statement) -> bool:
    if hyp.observation == prem.observation:
        return True
    if hyp.polarity == 0:
        if PARENT.get(hyp.observation) == prem.observation:
            return True  # "no lung opacity" denies consolidation too
        return prem.observation == NO_FINDING and hyp.observation in _CLEAR_LUNG_DENIES
    return PARENT.get(prem.observation) == hyp.observation


def statement_supports(hyp: Statement, prem: Statement) -> bool:
    """Whether premise statement ``prem`` supports hypothesis statement ``hyp``."""
    if hyp.polarity != prem.polarity or not _observation_supports(hyp, prem):
        return False
    # a stated severity must be the premise's ("small effusion" does not entail "moderate
    # effusion"); an absence is entailed only by an absence at least as wide ("no effusion"
    # entails "no large effusion", not the reverse)
    if hyp.polarity != 0 and hyp.severity is not None and hyp.severity != prem.severity:
        return False
    if hyp.polarity == 0 and prem.severity is not None and prem.severity != hyp.severity:
        return False
    if UNSPECIFIED & (hyp.extent | prem.extent):
        return False  # no place to compare: only an identical sentence is entailed
    if {hyp.side, prem.side} == {"left", "right"}:
        return False
    if hyp.polarity == 0:  # absence: the hypothesis's place must lie inside the premise's
        return hyp.extent <= prem.extent
    if hyp.side == "both":  # a bilateral claim needs a bilateral premise, each side inside
        return prem.side == "both" and all(prem.extent & atoms <= hyp.extent for atoms in _SIDE_ATOMS.values())
    if prem.side == "both":  # a bilateral finding is on the hypothesis's side (or either side)
        sides = [hyp.side] if hyp.side in _SIDE_ATOMS else list(_SIDE_ATOMS)
        return any((part := prem.extent & _SIDE_ATOMS[side]) and part <= hyp.extent for side in sides)
    return prem.extent <= hyp.extent


def normalise_for_comparison(text: str) -> str:
    """RadFact's text normalisation for matching phrases: lower case, single spaces, no
    dashes, no space before and no final ``. : ! ?``."""
    text = re.sub(r"\s+", " ", text.lower().strip())
    text = re.sub(r"[\-\u2013\u2014]", "", text)
    text = re.sub(r"\s*(?<=[.:!?])", "", text)
    return re.sub(r"[.:!?]$", "", text)


def best_match(text: str, candidates: Sequence[str]) -> int:
    """Index of the candidate that ``text`` names, as RadFact picks it: an exact match after
    normalisation, else the longest common substring (its length measured, like RadFact, on a
    slice of the un-normalised ``text``); -1 when there are no candidates."""
    normalised = [normalise_for_comparison(c) for c in candidates]
    target = normalise_for_comparison(text)
    for index, candidate in enumerate(normalised):
        if candidate == target:
            return index
    best, best_length = -1, 0
    for index, candidate in enumerate(normalised):
        match = SequenceMatcher(None, target, candidate).find_longest_match(0, len(target), 0, len(candidate))
        length = len(text[match.a:match.a + match.size])
        if length > best_length:
            best, best_length = index, length
    return best


@dataclass
class Verdict:
    """A judge's answer for one hypothesis sentence: ``status`` (``entailment`` /
    ``not_entailment``), ``evidence`` (indices of the premise sentences that support it),
    ``failed`` (the judge gave no usable answer), ``valid_evidence`` (False when an LLM cited
    evidence that is not a premise sentence: RadFact then drops the whole study),
    ``rewritten`` (the LLM rewrote the hypothesis in its answer)."""

    status: str
    evidence: list[int] = field(default_factory=list)
    failed: bool = False
    valid_evidence: bool = True
    rewritten: bool = False

    @property
    def entailed(self) -> bool:
        return self.status == ENTAILMENT


def rules_verdict(premises: Sequence[str], hypothesis: str) -> Verdict:
    """The deterministic judge's verdict for ``hypothesis`` given the premise sentences."""
    target = normalise_for_comparison(hypothesis)
    for index, premise in enumerate(premises):
        if normalise_for_comparison(premise) == target:
            return Verdict(ENTAILMENT, [index])
    evidence: set[int] = set()
    premise_statements = [sentence_statements(p) for p in premises]
    for statement in sentence_statements(hypothesis):
        support = [i for i, found in enumerate(premise_statements)
                   if any(statement_supports(statement, s) for s in found)]
        if not support:
            return Verdict(NOT_ENTAILMENT, [])
        evidence.update(support)
    return Verdict(ENTAILMENT, sorted(evidence))


# ----------------------------------------------------------------------------- the LLM judge

FEW_SHOT_FILE = Path(__file__).with_name("radfact_few_shot.json")


@lru_cache(maxsize=1)
def _few_shot_data() -> dict[str, Any]:
    return json.loads(FEW_SHOT_FILE.read_text(encoding="utf-8"))


def _yaml(obj: dict[str, Any]) -> str:
    import yaml

    # what RadFact's simple_formatter writes: yaml.dump of the pydantic dict, fields in order
    return yaml.dump(obj, sort_keys=False)


def _binary(status: str) -> str:
    return ENTAILMENT if status == ENTAILMENT else NOT_ENTAILMENT


def few_shot_turns() -> list[tuple[str, str]]:
    """RadFact's few-shot examples as (user, assistant) turns: per example, first every phrase
    of report A judged against report B, then every phrase of B against A; statuses binary."""
    turns = []
    for example in _few_shot_data()["examples"]:
        phrases_a, phrases_b = example["input"]["phrases_A"], example["input"]["phrases_B"]
        for reference, answers in ((phrases_b, example["output"]["phrases_A_evidenced"]),
                                   (phrases_a, example["output"]["phrases_B_evidenced"])):
            for answer in answers:
                query = _yaml({"reference": list(reference), "hypothesis": answer["phrase"]})
                reply = _yaml({"phrase": answer["phrase"], "evidence": list(answer["evidence"]),
                               "status": _binary(answer["status"])})
                turns.append((query, reply))
    return turns


def entailment_messages(premises: Sequence[str], hypothesis: str) -> list[dict[str, str]]:
    """The chat RadFact sends for one hypothesis: system message, few-shot turns, the query."""
    messages = [{"role": "system", "content": _few_shot_data()["system_message"]}]
    for query, reply in few_shot_turns():
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": _yaml({"reference": list(premises), "hypothesis": hypothesis})})
    return messages


def entailment_prompt(premises: Sequence[str], hypothesis: str) -> str:
    """:func:`entailment_messages` as the judge backends' ``messages`` prompt (a JSON list)."""
    return json.dumps(entailment_messages(premises, hypothesis), ensure_ascii=False)


_YAML_BLOCK = re.compile(r"^```(?:ya?ml)?(?P<yaml>[^`]*)", re.MULTILINE | re.DOTALL)


def parse_entailment_reply(reply: str, premises: Sequence[str], hypothesis: str) -> Verdict:
    """A judge reply -> :class:`Verdict`, with RadFact's rules: the YAML of the first code block
    (else the whole reply) must be a mapping with ``phrase`` (text), ``evidence`` (list of text)
    and ``status`` (``entailment`` / ``not_entailment`` / ``contradiction`` / ``neutral``);
    entailment and contradiction need evidence, neutral must have none. Anything else is a
    failed call (``failed=True``, not entailed). A rewritten phrase is put back (and flagged);
    each evidence string is mapped to its best-matching premise; evidence that is not a premise
    sentence after normalisation makes ``valid_evidence`` False."""
    import yaml

    failed = Verdict(NOT_ENTAILMENT, [], failed=True)
    match = _YAML_BLOCK.search(reply.strip())
    try:
        data = yaml.safe_load(match.group("yaml") if match else reply)
    except yaml.YAMLError:
        return failed
    if not isinstance(data, dict) or not {"phrase", "evidence", "status"} <= set(data):
        return failed
    phrase, evidence, status = data["phrase"], data["evidence"], data["status"]
    if not isinstance(phrase, str) or not isinstance(status, str) or not isinstance(evidence, list) \
            or not all(isinstance(e, str) for e in evidence):
        return failed
    if status not in (ENTAILMENT, NOT_ENTAILMENT, "contradiction", "neutral"):
        return failed
    if (status in (ENTAILMENT, "contradiction") and not evidence) or (status == "neutral" and evidence):
        return failed
    normalised = {normalise_for_comparison(p) for p in premises}
    valid = all(normalise_for_comparison(e) in normalised for e in evidence)
    indices = sorted({i for i in (best_match(e, premises) for e in evidence) if i >= 0})
    return Verdict(_binary(status), indices, failed=False, valid_evidence=valid, rewritten=phrase != hypothesis)


def few_shot_agreement() -> tuple[int, int]:
    """(agreeing, total) verdicts of the rules judge on RadFact's own labelled few-shot
    judgements (each phrase of one side judged against the other side's phrases)."""
    agree = total = 0
    for example in _few_shot_data()["examples"]:
        a, b = example["input"]["phrases_A"], example["input"]["phrases_B"]
        for premises, answers in ((b, example["output"]["phrases_A_evidenced"]),
                                  (a, example["output"]["phrases_B_evidenced"])):
            for answer in answers:
                total += 1
                agree += rules_verdict(premises, answer["phrase"]).entailed == (answer["status"] == "entailment")
    return agree, total
