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
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from boxmed_eval.records import CHEXPERT_CLASSES

log = logging.getLogger(__name__)

DISEASE_CATEGORIES: tuple[str, ...] = CHEXPERT_CLASSES

ANATOMICAL_REGIONS: tuple[str, ...] = (
    "abdomen", "cardiac silhouette", "left apical zone", "left hilar structures", "left lung", "mediastinum",
    "right apical zone", "right hilar structures", "right lung", "whole lung", "spine", "trachea",
)

_LEFT = r"(?:left|lt\.?)"
_RIGHT = r"(?:right|rt\.?)"
_BOTH = r"(?:bilateral(?:ly)?|both|bibasilar|bibasal|bi-?apical)"
_LUNG_PART = (r"(?:lung|lobe|lobar|base|basilar|basal|basis|hemithorax|costophrenic|midlung|mid lung|"
              r"mid-lung|lingula|lingular|hemidiaphragm|diaphragm|perihilar|pleural|chest|upper zone|lower zone|"
              r"mid zone|rib|ribs|effusion|pneumothorax|opacity|opacities|consolidation|atelectasis)")

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
     r"pacer|valve|sternotomy|cabg)\b", ("cardiac silhouette",)),
    (r"\b(?:mediastin\w*|aorta|aortic|svc|superior vena cava|cavoatrial|thoracic inlet|paratracheal|"
     r"great vessels)\b", ("mediastinum",)),
    (rf"\b{_BOTH}\b", ("whole lung",)),
    (rf"\b{_LEFT}\s+(?:\w+\s+){{0,3}}{_LUNG_PART}\b|\b{_LUNG_PART}\s+(?:\w+\s+){{0,3}}(?:on the )?{_LEFT}\b",
     ("left lung",)),
    (rf"\b{_RIGHT}\s+(?:\w+\s+){{0,3}}{_LUNG_PART}\b|\b{_LUNG_PART}\s+(?:\w+\s+){{0,3}}(?:on the )?{_RIGHT}\b",
     ("right lung",)),
    (r"\b(?:lungs|lung|pulmonary|pleural|pneumothorax|effusion|airspace|interstitial|hyperinflat\w*|"
     r"edema|opacit\w*|consolidat\w*|atelecta\w*|emphysema|volumes?)\b", ("whole lung",)),
)
_COMPILED_LEXICON = tuple((re.compile(p, re.IGNORECASE), regions) for p, regions in ANATOMY_LEXICON)

DEFAULT_REGION = "whole lung"


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
        entry = LABELERS.get("rules")
        return entry() if isinstance(entry, type) else entry
    except Exception as exc:  # registered but unusable (missing resource...): fall back, say so
        log.warning("rule-based CheXpert labeler unavailable (%s): using the fallback keyword map", exc)
        return None


def labeler_name() -> str:
    """Which disease mapping :func:`label_sentences` uses ("rules" or "keywords")."""
    return "rules" if _project_labeler() is not None else "keywords"


def label_sentences(sentences: list[str]) -> list[dict[str, int | None]]:
    """CheXpert labels per sentence: the project's rule-based labeler when importable
    (one call for all sentences), else :func:`keyword_label`."""
    labeler = _project_labeler()
    if labeler is not None:
        return [dict(row) for row in labeler.label(list(sentences))]
    return [keyword_label(s) for s in sentences]
