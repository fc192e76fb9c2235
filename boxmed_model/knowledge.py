"""The two knowledge banks of BoxMed-RL (paper Sec. 3.2.1) and the lexicons that map a
finding sentence onto them.

* Disease Category Knowledge Bank: the 14 CheXpert observations
  (``boxmed_eval.records.CHEXPERT_CLASSES``).
* Anatomical Region Knowledge Bank: the 12 regions the paper lists.
* :data:`ANATOMY_LEXICON`: phrases of report language -> region (written for this project;
  e.g. "right lower lobe" -> right lung, "aortic knob" -> mediastinum).
* :data:`DISEASE_KEYWORDS`: a small keyword map used to assign disease categories **only
  when the project's rule-based CheXpert labeler cannot be imported** (see
  :func:`label_sentences`); the labeler is the reference.
* :data:`EXPERT_FINDINGS` / :data:`EXPERT_OVERRIDES`: expert finding -> disease mappings with
  their intermediate concept ("low lung volumes" -> volume loss -> Atelectasis, "sternotomy
  wires" -> post-surgical hardware -> Support Devices); :func:`find_mentions` merges them with
  the labeler's mentions and :func:`mention_region` gives each mention its nearest region.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from boxmed_eval.records import CHEXPERT_CLASSES

log = logging.getLogger(__name__)

DISEASE_CATEGORIES: tuple[str, ...] = CHEXPERT_CLASSES

ANATOMICAL_REGIONS: tuple[str, ...] = (
    "abdomen", "cardiac silhouette", "left apical zone", "left hilar structures", "left lung", "mediastinum",
    "right apical zone", "right hilar structures", "right lung", "whole lung", "spine", "trachea",
)

_LEFT = r"(?:left(?:[\s-]+sided)?|lt\.?)"
_RIGHT = r"(?:right(?:[\s-]+sided)?|rt\.?)"
_BOTH = r"(?:bilateral(?:ly)?|both|bibasilar|bibasal|bi-?apical)"
_LUNG_PART = (r"(?:lung|lobe|lobar|base|basilar|basal|basis|hemithorax|costophrenic|midlung|mid lung|"
              r"mid-lung|lingula|lingular|hemidiaphragm|diaphragm|perihilar|pleural|chest|upper zone|lower zone|"
              r"mid zone|rib|ribs|volume loss|effusion|pneumothorax|opacity|opacities|consolidation|atelectasis)")

# Up to three words between a side and a lung part, not across a list joint ("left effusion
# and right basilar atelectasis" must not read "effusion and right" as a right-lung phrase).
_GAP3 = r"(?:(?!(?:and|or|with|but|nor)\b)\w+\s+){0,3}"

# Ordered: the first pattern that matches a sentence decides its region(s); specific
# structures come before the lungs, sided lung phrases before unsided ones.
ANATOMY_LEXICON: tuple[tuple[str, tuple[str, ...]], ...] = (
    (rf"\b{_BOTH}\s+(?:apical|apices|apex|upper lobes?)|\bapices\b|\bbi-?apical\b", ("left apical zone", "right apical zone")),
    (rf"\b{_LEFT}\s+(?:\w+\s+){{0,2}}(?:apical|apex|apices|upper lobe)|\b(?:apical|apex)\b[^.]*\b{_LEFT}\b",
     ("left apical zone",)),
    (rf"\b{_RIGHT}\s+(?:\w+\s+){{0,2}}(?:apical|apex|apices|upper lobe)|\b(?:apical|apex)\b[^.]*\b{_RIGHT}\b",
     ("right apical zone",)),
    (rf"\b{_LEFT}\s+(?:\w+\s+){{0,2}}(?:hilar|hilum|hila)\b", ("left hilar structures",)),
    (rf"\b{_RIGHT}\s+(?:\w+\s+){{0,2}}(?:hilar|hilum|hila)\b", ("right hilar structures",)),
    (r"\b(?:hilar|hila|hilum)\b(?!\s+(?:opacit|congestion))", ("left hilar structures", "right hilar structures")),
    (r"\b(?:endotracheal|trachea|tracheal|carina|et tube|tracheostomy)\b", ("trachea",)),
    (r"\b(?:spine|spinal|cervical|t-spine|vertebra\w*|thoracic spine|degenerative|scoliosis|kyphosis|spondyl\w*|osteophyt\w*)\b",
     ("spine",)),
    (r"\b(?:abdomen|abdominal|subdiaphragmatic|free air|bowel|stomach|gastric|nasogastric|ng tube|"
     r"feeding tube|enteric tube|upper quadrant|cholecystectomy|liver|splenic)\b", ("abdomen",)),
    (r"\b(?:heart|cardiac|cardiomegaly|cardiomediastinal|pericardial|cardio\w*|atrium|atrial|ventric\w*|pacemaker|"
     r"pacer|valve)\b", ("cardiac silhouette",)),
    # Sternotomy wires lie on the midline sternum, projected over the mediastinum.
    (r"\b(?:mediastin\w*|sternotomy|sternal|cabg|aorta|aortic|svc|superior vena cava|cavoatrial|thoracic inlet|paratracheal|"
     r"great vessels)\b", ("mediastinum",)),
    (rf"\b{_BOTH}\b", ("whole lung",)),
    (rf"\b{_LEFT}\s+{_GAP3}{_LUNG_PART}\b|\b{_LUNG_PART}\s+{_GAP3}(?:on the )?{_LEFT}\b",
     ("left lung",)),
    (rf"\b{_RIGHT}\s+{_GAP3}{_LUNG_PART}\b|\b{_LUNG_PART}\s+{_GAP3}(?:on the )?{_RIGHT}\b",
     ("right lung",)),
    (r"\b(?:lungs|lung|pulmonary|pleural|pneumothorax|effusion|airspace|interstitial|hyperinflat\w*|"
     r"edema|opacit\w*|consolidat\w*|atelecta\w*|emphysema|volumes?)\b", ("whole lung",)),
)
_COMPILED_LEXICON = tuple((re.compile(p, re.IGNORECASE), regions) for p, regions in ANATOMY_LEXICON)

DEFAULT_REGION = "whole lung"


# Region matches of the generic whole-lung entry that are only a disease word
# ("consolidation", "effusion"): they say nothing about where, so they never beat a
# located phrase nearby ("left lower lobe opacity, likely atelectasis" -> left lung).
_GENERIC_DISEASE_WORD = re.compile(r"(?:pneumothorax|effusion|edema|opacit\w*|consolidat\w*|atelecta\w*|"
                                   r"emphysema|hyperinflat\w*|airspace|interstitial)", re.IGNORECASE)


def region_matches(text: str) -> list[tuple[int, int, int, tuple[str, ...]]]:
    """Every anatomy-lexicon match in ``text`` as (lexicon rank, start, end, regions)."""
    found: list[tuple[int, int, int, tuple[str, ...]]] = []
    last = len(_COMPILED_LEXICON) - 1
    for rank, (pattern, regions) in enumerate(_COMPILED_LEXICON):
        # Overlapping matches too (search again from the next character): a long match
        # must not hide a nearer phrase that shares its words.
        pos, seen = 0, set()
        while (match := pattern.search(text, pos)) is not None:
            pos = match.start() + 1
            if match.span() in seen or (rank == last and _GENERIC_DISEASE_WORD.fullmatch(match.group())):
                continue
            seen.add(match.span())
            found.append((rank, match.start(), match.end(), regions))
    return found


def nearest_region(text: str, start: int, end: int, *, clause: tuple[int, int] | None = None,
                   reach_outside: bool = True) -> tuple[str, ...]:
    """The region(s) of the lexicon match nearest to ``text[start:end]`` (a mention).

    Matches inside ``clause`` (start, end) come first; outside it only when
    ``reach_outside`` (a negated mention does not borrow a neighbour's location: "left
    effusion; no pneumothorax" -> the pneumothorax statement is about the whole lung).
    Ties (and overlapping or adjacent matches) go to the more specific lexicon entry
    (earlier in :data:`ANATOMY_LEXICON`)."""
    best: tuple[int, int, int] | None = None
    chosen: tuple[int, int, int, tuple[str, ...]] | None = None
    candidates = []
    for rank, m_start, m_end, regions in region_matches(text):
        outside = clause is not None and (m_end <= clause[0] or m_start >= clause[1])
        if outside and not reach_outside:
            continue
        candidates.append((rank, m_start, m_end, regions))
        distance = max(0, m_start - end, start - m_end)
        # Overlapping and directly adjacent phrases are equally near: "left apical
        # pneumothorax" is both "left ... pneumothorax" (left lung) and "left apical" next
        # to the mention, and the more specific entry should win.
        key = (int(outside), 0 if distance <= 2 else distance, rank)
        if best is None or key < best:
            best, chosen = key, (rank, m_start, m_end, regions)
    if chosen is None:
        return (DEFAULT_REGION,)
    # A more specific phrase sharing words with the chosen one refines it: "opacities in
    # the left lung apex" matches "opacities ... left" (left lung) and "left lung apex".
    overlapping = [c for c in candidates if c[1] < chosen[2] and chosen[1] < c[2] and c[0] < chosen[0]]
    return min(overlapping)[3] if overlapping else chosen[3]


def regions_for(sentence: str) -> tuple[str, ...]:
    """The anatomical region(s) a finding sentence is about (first lexicon match; the whole
    lung when nothing matches, which is what unlocalised chest findings refer to)."""
    for pattern, regions in _COMPILED_LEXICON:
        if pattern.search(sentence):
            return regions
    return (DEFAULT_REGION,)


# ------------------------------------------------------------------- fallback disease map

DISEASE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("cardiomediastinal silhouette is enlarged", "widened mediastinum",
                                   "mediastinal widening", "enlarged cardiomediastinal", "mediastinum is widened"),
    "Cardiomegaly": ("cardiomegaly", "heart size is enlarged", "enlarged heart", "heart is enlarged",
                     "enlarged cardiac silhouette", "cardiac silhouette is enlarged", "heart size is mildly enlarged",
                     "heart size", "cardiac size", "heart is normal in size", "cardiac silhouette"),
    "Lung Opacity": ("opacity", "opacities", "opacification", "infiltrate", "airspace disease", "haziness",
                     "density", "densities", "reticular", "interstitial marking"),
    "Lung Lesion": ("nodule", "nodular", "mass", "lesion", "granuloma", "tumor", "neoplasm", "cyst"),
    "Edema": ("edema", "vascular congestion", "pulmonary congestion", "vascular engorgement", "kerley",
              "heart failure", "chf"),
    "Consolidation": ("consolidation", "consolidative", "airspace consolidation"),
    "Pneumonia": ("pneumonia", "infection", "infectious", "aspiration"),
    "Atelectasis": ("atelectasis", "atelectatic", "collapse", "low lung volumes", "low in volume",
                    "volume loss", "lungs are low"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces"),
    "Pleural Effusion": ("pleural effusion", "effusion", "effusions", "blunting of the costophrenic",
                         "costophrenic angle blunting", "pleural fluid"),
    "Pleural Other": ("pleural thickening", "fibrothorax", "pleural scarring", "pleural plaque", "pleural calcification"),
    "Fracture": ("fracture", "fractures", "fractured"),
    "Support Devices": ("tube", "catheter", "line", "pacemaker", "pacer", "wire", "wires", "clip", "clips",
                        "stent", "valve", "port", "drain", "device", "hardware", "picc", "sternotomy"),
}
# Words that make a mention negative when they precede it in the same clause.
_NEGATION_RE = re.compile(r"\b(?:no|not|without|negative for|free of|clear of|resolved|resolution of|"
                          r"removed|absence of|normal|unremarkable|within normal limits|stable|is normal)\b",
                          re.IGNORECASE)
_UNCERTAIN_RE = re.compile(r"\b(?:may|might|possible|possibly|probable|probably|likely|suggest\w*|concern\w*|"
                           r"cannot be excluded|can not be excluded|questionable|versus|vs|suspicious|"
                           r"could|consider\w*|borderline)\b", re.IGNORECASE)
_NORMAL_SIZE_RE = re.compile(r"\b(?:normal|within normal limits|unremarkable|top normal|stable|not enlarged)\b",
                             re.IGNORECASE)


def keyword_label(sentence: str) -> dict[str, int | None]:
    """Fallback CheXpert-style labels of one sentence (1 / 0 / -1 / None): a keyword mention,
    negated when a negation word precedes it in the clause, uncertain on hedge words."""
    labels: dict[str, int | None] = {name: None for name in CHEXPERT_CLASSES}
    lowered = sentence.lower()
    for disease, keywords in DISEASE_KEYWORDS.items():
        for keyword in sorted(keywords, key=len, reverse=True):
            match = re.search(rf"\b{re.escape(keyword)}\b", lowered)
            if match is None:
                continue
            clause_start = max(lowered.rfind(p, 0, match.start()) for p in (",", ";", " but ", " however"))
            before = lowered[clause_start + 1 if clause_start >= 0 else 0: match.start()]
            if disease in ("Cardiomegaly", "Enlarged Cardiomediastinum") and keyword in (
                    "heart size", "cardiac size", "cardiac silhouette", "heart is normal in size"):
                # "heart size is normal" is a negative mention, "heart size is enlarged" positive
                value = 0 if _NORMAL_SIZE_RE.search(lowered) else (1 if "enlarg" in lowered else None)
            elif _NEGATION_RE.search(before):
                value = 0
            elif _UNCERTAIN_RE.search(lowered):
                value = -1
            else:
                value = 1
            if value is not None:
                labels[disease] = value
            break
    pathologies = [v for k, v in labels.items() if k not in ("No Finding", "Support Devices")]
    labels["No Finding"] = None if any(v in (1, -1) for v in pathologies) else 1
    return labels


@lru_cache(maxsize=1)
def _project_labeler():
    """The project's rule-based CheXpert labeler, or None when it is not importable."""
    try:
        from boxmed_eval.metrics.labelers import LABELERS  # type: ignore[attr-defined]
    except ImportError:
        try:
            from boxmed_eval.metrics.labelers.rules import LABELERS  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        # Chains are training targets: they take the radiologist's reading ("rules-plus"), not
        # the CheXpert labeler's quirks ("rules"), which exist to reproduce published CE numbers
        # (e.g. "borderline cardiomegaly" is uncertain here, positive for the CheXpert labeler).
        entry = LABELERS.get("rules-plus")
        return entry() if isinstance(entry, type) else entry
    except Exception as exc:  # registered but unusable (missing resource...): fall back, say so
        log.warning("rule-based CheXpert labeler unavailable (%s): using the fallback keyword map", exc)
        return None


def labeler_name() -> str:
    """Which disease mapping :func:`label_sentences` uses ("rules" or "keywords")."""
    return "rules-plus" if _project_labeler() is not None else "keywords"


def label_sentences(sentences: list[str]) -> list[dict[str, int | None]]:
    """CheXpert labels per sentence: the project's rule-based labeler when importable
    (one call for all sentences), else :func:`keyword_label`."""
    labeler = _project_labeler()
    if labeler is not None:
        return [dict(row) for row in labeler.label(list(sentences))]
    return [keyword_label(s) for s in sentences]


# ------------------------------------------------------------ mentions and expert mappings

# Expert-curated finding -> disease mappings (paper Sec. 3.2.1: "Lungs are low in volume" ->
# Atelectasis via collapse / volume loss). Each entry: (pattern over cleaned lower-case text,
# CheXpert class, intermediate concept or None). They add what a radiologist infers from a
# sign that the CheXpert mention lexicon does not list, and name the concept linking a sign
# to its class where the lexicon already finds the class (collapse -> Atelectasis).
EXPERT_FINDINGS: tuple[tuple[str, str, str | None], ...] = (
    (r"\b(?:low(?:er)?|reduced|decreased|diminished)\s+(?:lung\s+)?volumes?\b(?![\s-]+normal)|\blow\s+in\s+volume\b|\blung\s+volumes\s+are\s+(?:\w+\s+)?low\b(?![\s-]+normal)|"
     r"\bhypoinflat\w*|\bhypoexpan\w*|\bshallow\s+inspiration\b|\bpoor(?:ly)?\s+inspirat\w*",
     "Atelectasis", "volume loss"),
    (r"\bvolume\s+loss\b", "Atelectasis", "volume loss"),
    (r"\bcollapsed?\b", "Atelectasis", "collapse"),
    (r"\bmediastinal\s+shift\b|\bshift\s+of\s+the\s+mediastinum\b", "Atelectasis", "mediastinal shift"),
    (r"\bplate-?like\b|\bdiscoid\b|\bsubsegmental\b|\blinear\s+(?:opacit\w+|densit\w+)\b", "Atelectasis", "subsegmental collapse"),
    (r"\b(?:median\s+|midline\s+)?sternotomy(?:\s+wires?)?\b|\bsternal\s+(?:wires?|sutures?|cerclage)\b|"
     r"\b(?:surgical|vascular|cabg|postoperative|post-operative)\s+clips?\b|\bclips?\b|\bcabg\b|\bcoronary\s+(?:artery\s+)?bypass\b",
     "Support Devices", "post-surgical hardware"),
    (r"\b(?:pacemaker|pacer|defibrillator|aicd|icd)\b", "Support Devices", "cardiac device"),
    (r"\bair\s+bronchograms?\b", "Consolidation", "airspace filling"),
    (r"\bkerley\b|\bcephalization\b|\b(?:pulmonary\s+)?vascular\s+congestion\b|\bperihilar\s+haziness\b",
     "Edema", "pulmonary venous congestion"),
    (r"\bblunt(?:ing|ed)\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}costophrenic\b|\bcostophrenic\s+(?:angles?|sulcus|sulci)\s+(?:\w+\s+){0,2}blunt\w*|"
     r"\bmeniscus\b", "Pleural Effusion", "costophrenic angle blunting"),
    (r"\b(?:calcified\s+)?granulom(?:as?|ata)\b", "Lung Lesion", "calcified nodule"),
    (r"\b(?:apical\s+)?pleural\s+(?:thickening|scarring|plaques?)\b|\bapical\s+cap\b", "Pleural Other", "pleural thickening"),
)
# Labeler mentions an expert reading overrides: (pattern, class whose overlapping mention is
# dropped, class, concept). "Prior granulomatous infection" is a healed, calcified process,
# not an active pneumonia.
EXPERT_OVERRIDES: tuple[tuple[str, str, str, str], ...] = (
    (r"\b(?:prior|old|previous|remote|healed|residuals?\s+of\s+(?:prior\s+)?)\s*granulomatous\s+(?:infection|disease)\b|"
     r"\bgranulomatous\s+(?:infection|disease)\b", "Pneumonia", "Lung Lesion", "healed granulomatous disease"),
)
_COMPILED_OVERRIDES = tuple((re.compile(p), drop, disease, concept) for p, drop, disease, concept in EXPERT_OVERRIDES)
_COMPILED_EXPERT = tuple((re.compile(p), disease, concept) for p, disease, concept in EXPERT_FINDINGS)
# Narrow negation cues for expert mentions: "stable"/"normal" must not negate
# "stable sternotomy wires" (the labeler's own cues decide its mentions).
_EXPERT_NEG_RE = re.compile(r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of|resolved|resolution\s+of|"
                            r"removed|removal\s+of|rather\s+than)\b")
_EXPERT_UNC_RE = re.compile(r"\b(?:may|might|could|possible|possibly|probable|probably|likely|suggest\w*|"
                            r"concern\w*|questionable|versus|suspicious|cannot\s+be\s+excluded|not\s+excluded)\b")
_SIMPLE_BOUNDARY = re.compile(r"[.!?](?=\s|$)|;|\b(?:but|however|although|though|whereas|which|except)\b")


@dataclass(frozen=True)
class FindingMention:
    """One mention of a CheXpert class in a sentence (spans index :func:`clean_sentence`'s text)."""

    disease: str
    label: int  # 1 positive, -1 uncertain, 0 negated
    start: int
    end: int
    concept: str | None = None
    clause: tuple[int, int] = (0, 0)  # the mention's clause (start, end) in the same text


def clean_sentence(sentence: str) -> str:
    """The lower-case text mention spans refer to (the labeler's own cleaning when available)."""
    try:
        from boxmed_eval.metrics.labelers.rules import clean_report
    except ImportError:  # pragma: no cover - the labeler ships with the project
        return " ".join(sentence.lower().split())
    return clean_report(sentence)


def _boundary_pattern() -> re.Pattern[str]:
    try:
        from boxmed_eval.metrics.labelers.rules import BOUNDARY
    except ImportError:  # pragma: no cover
        return _SIMPLE_BOUNDARY
    return BOUNDARY


def clause_of(text: str, start: int, end: int) -> tuple[int, int]:
    """The clause around ``text[start:end]``: between the nearest clause boundaries
    (sentence end, ``;``, ``but``, ``except``, ``which``... as the labeler scopes negation)."""
    clause_start, clause_end = 0, len(text)
    for match in _boundary_pattern().finditer(text):
        if match.end() <= start:
            clause_start = match.end()
        elif match.start() >= end:
            clause_end = match.start()
            break
    return clause_start, clause_end


_EXPERT_POST_NEG_RE = re.compile(r"\b(?:(?:has|have)\s+been\s+)?(?:removed|resolved|no\s+longer\s+(?:seen|visible|present)|"
                                 r"not\s+(?:seen|present|identified|visualized))\b")


def _expert_label(text: str, start: int, end: int, clause: tuple[int, int]) -> int:
    before = text[clause[0]:start]
    if _EXPERT_NEG_RE.search(before) or _EXPERT_POST_NEG_RE.search(text, end, clause[1]):
        return 0
    if _EXPERT_UNC_RE.search(text[clause[0]:clause[1]]):
        return -1
    return 1


def _labeler_mentions(text: str) -> list[FindingMention] | None:
    labeler = _project_labeler()
    if labeler is None or not hasattr(labeler, "mentions"):
        return None
    found = []
    for m in labeler.mentions(text):
        # Neutral anatomy ("the heart", label None) and the labeler's non-CheXpert
        # abnormalities ("_other": emphysema, scoliosis...) are no disease mention.
        if m.label is None or m.observation not in DISEASE_CATEGORIES:
            continue
        found.append(FindingMention(m.observation, int(m.label), m.start, m.end, None, clause_of(text, m.start, m.end)))
    return found


def _keyword_mentions(text: str) -> list[FindingMention]:
    """Fallback mentions: keyword spans, labelled per clause with :func:`keyword_label`."""
    found = []
    for disease, keywords in DISEASE_KEYWORDS.items():
        pattern = re.compile("|".join(rf"\b{re.escape(k)}\b" for k in sorted(keywords, key=len, reverse=True)))
        for match in pattern.finditer(text):
            clause = clause_of(text, match.start(), match.end())
            value = keyword_label(text[clause[0]:clause[1]]).get(disease)
            if value is not None:
                found.append(FindingMention(disease, int(value), match.start(), match.end(), None, clause))
    return found


def find_mentions(sentence: str) -> tuple[str, list[FindingMention]]:
    """The cleaned sentence and its disease mentions, left to right.

    CheXpert mentions come from the project's labeler (its negation/uncertainty rules),
    expert mentions from :data:`EXPERT_FINDINGS`. An expert mention overlapping a labeler
    mention of the same class only lends it its concept; two mentions of one class in one
    clause and region are one mention (the first): "low lung volumes with bibasilar collapse"
    is one chain, "left pleural effusion and small right pleural effusion" two.
    """
    text = clean_sentence(sentence)
    mentions = _labeler_mentions(text)
    if mentions is None:
        mentions = _keyword_mentions(text)
    for pattern, drop, disease, concept in _COMPILED_OVERRIDES:
        for match in pattern.finditer(text):
            start, end = match.span()
            mentions = [m for m in mentions if not (m.disease == drop and m.start < end and start < m.end)]
            clause = clause_of(text, start, end)
            mentions.append(FindingMention(disease, _expert_label(text, start, end, clause), start, end, concept, clause))
    for pattern, disease, concept in _COMPILED_EXPERT:
        for match in pattern.finditer(text):
            start, end = match.span()
            same = [i for i, m in enumerate(mentions) if m.disease == disease and m.start < end and start < m.end]
            if same:
                for i in same:
                    if mentions[i].concept is None:
                        old = mentions[i]
                        mentions[i] = FindingMention(old.disease, old.label, old.start, old.end, concept, old.clause)
                continue
            clause = clause_of(text, start, end)
            mentions.append(FindingMention(disease, _expert_label(text, start, end, clause), start, end, concept, clause))
    mentions.sort(key=lambda m: (m.start, m.end))
    kept: list[FindingMention] = []
    for mention in mentions:
        duplicate = next((k for k in kept if k.disease == mention.disease and k.clause == mention.clause
                          and mention_region(text, k) == mention_region(text, mention)), None)
        if duplicate is None:
            kept.append(mention)
        elif duplicate.concept is None and mention.concept is not None:
            kept[kept.index(duplicate)] = FindingMention(duplicate.disease, duplicate.label, duplicate.start,
                                                         duplicate.end, mention.concept, duplicate.clause)
    return text, kept


def mention_region(text: str, mention: FindingMention) -> tuple[str, ...]:
    """The region nearest to a mention; a negated one looks only inside its own clause."""
    return nearest_region(text, mention.start, mention.end, clause=mention.clause, reach_outside=mention.label != 0)
