"""A rule-based CheXpert labeler written for this project (the ``rules`` labeler).

It follows the design of the Stanford CheXpert labeler (mention phrases per observation, then
negation / uncertainty decided around each mention, then aggregation per report) but replaces
its dependency-parse patterns (NegBio + a BLLIP parser, unavailable offline and slow) with
precompiled regular expressions over clauses. medspacy/negbio are deliberately not used: they
pin old spaCy/numpy versions that conflict with this project's dependencies.

Pipeline for one report
1. Clean like the CheXpert labeler: lower case, ``and/or`` -> ``or``, ``a/b`` -> ``a or b``;
   a few rewrites so that a negation cue is not misread (``no change in X`` -> ``unchanged X``,
   ``vs.`` -> ``versus``). Single newlines are spaces (MIMIC reports are hard-wrapped); a blank
   line ends a sentence.
2. Mentions: per observation, a lexicon mirroring the CheXpert labeler's mention phrases
   (e.g. Pleural Effusion: ``effusion``, ``pleural fluid``; Lung Opacity: ``opacity``,
   ``infiltrate``, ``airspace disease``, ``haziness``...; Support Devices: ``line``, ``tube``,
   ``catheter``, ``pacemaker``...), with its "unmention" exceptions (``pericardial effusion`` is
   not a pleural effusion, ``calcified nodule`` not a lung lesion, ``plate-like atelectasis``
   not a device...).
3. Scope: a mention's context is its clause: the text between the nearest clause boundaries
   (sentence end, ``;``, ``but``, ``however``, ``although``, ``which``, ``except``, ``and the``,
   ``, there``, a comma followed by a severity word as in ``no effusion, mild cardiomegaly``...).
   A negation cue before the mention covers a whole list (``no effusion, pneumothorax or
   consolidation`` negates all three) unless a verb closes the negated phrase first
   (``no pneumothorax is seen and a left effusion ...``).
4. Decision per mention, in the CheXpert labeler's order:
   a. pre-negation uncertainty (``cannot exclude``, ``cannot be excluded``, ``not excluded``,
      ``cannot rule out``, ``not well seen``, and ``no new X``: the CheXpert labeler labels
      ``no new X`` uncertain, and so does this one) -> -1;
   b. negation (``no``, ``without``, ``free of``, ``negative for``, ``no evidence of``,
      ``resolved``/``has resolved``/``resolution of``, ``removed``, ``normal``, ``unremarkable``,
      ``within normal limits``, ``X is not seen``, ``X is absent``, ``rule out X``,
      ``history of X``) -> 0;
   c. uncertainty (``may``, ``possible``, ``likely``, ``probable``, ``suspicious for``,
      ``concerning for``, ``suggestive of``, ``questionable``, ``versus``, ``X or Y``...) -> -1;
   d. otherwise positive (1).
   A negation that precedes an uncertainty cue in the same list item wins (``no suspicious
   nodule`` is negative); ``or`` / ``versus`` never override a negation (``no effusion or
   pneumothorax`` is negative).
5. Aggregation per observation over its mentions: positive > uncertain > negative (the CheXpert
   labeler's rule); no mention -> blank. ``chf`` / ``heart failure`` positive or uncertain also
   make Cardiomegaly uncertain (a CheXpert labeler rule).
6. No Finding = 1 when no observation other than Support Devices is positive or uncertain and
   no other abnormality from the CheXpert labeler's "no finding" phrase list (emphysema,
   granuloma, scoliosis, calcification, degenerative change...) is positive or uncertain;
   otherwise blank (never 0), as in the CheXpert labeler.

Deliberate differences from the CheXpert labeler (documented, tested in the evaluation set):
- Neutral anatomy (``heart``, ``heart size``, ``cardiac silhouette``, ``mediastinum``,
  ``cardiomediastinal contours``...) is positive only with an abnormality word in its clause
  (``enlarged``, ``widened``, ``prominent``...); ``the heart`` alone (e.g. ``a catheter over the
  heart``) gives no label instead of a false positive Cardiomegaly. Its negations and
  uncertainties follow the labeler (``stable``/``unchanged`` heart size or cardiomediastinal
  silhouette is uncertain, as the CheXpert labeler rules it).
- An empty report gets all blanks (the CheXpert labeler would say No Finding = 1).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from boxmed_eval.metrics.labelers import LABELERS, Labeler, Labels, blank_labels
from boxmed_eval.records import CHEXPERT_CLASSES

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

# ------------------------------------------------------------------------------- lexicon
# Each observation: (kind, regex) with kind "finding" (a mention is a finding), "anatomy"
# (neutral anatomy: positive only with an abnormality word) or "uncertain" (always at most
# uncertain, e.g. "vascular congestion" for Edema, as in the CheXpert labeler).
_W = r"[a-z\-]*"  # word continuation (the CheXpert labeler matches stems: "atelecta" ...)

MENTIONS: dict[str, list[tuple[str, str]]] = {
    "Enlarged Cardiomediastinum": [
        ("finding", r"\b(?:cardio)?mediastinal\s+(?:widening|enlargement)\b"),
        ("finding", r"\b(?:widening|enlargement)\s+of\s+the\s+(?:cardio)?mediastinum\b"),
        ("anatomy", r"\bcardiomediastinum\b"),
        ("anatomy", r"\bmediastinum\b"),
        ("anatomy", r"\b(?:cardio)?mediastinal\s+(?:silhouettes?|contours?|configuration|shadow|width|structures?|size)\b"),
        ("anatomy", r"\bpericardial\s+silhouette\b"),
        ("anatomy", r"\bcontours?\b"),
    ],
    "Cardiomegaly": [
        ("finding", r"\bcardiomegaly\b"),
        ("finding", r"\bcardiac\s+enlargement\b"),
        ("finding", r"\benlarged\s+heart\b"),
        ("finding", r"\benlargement\s+of\s+the\s+(?:heart|cardiac\s+silhouette)\b"),
        ("anatomy", r"\b(?:heart|cardiac)\s+(?:size|silhouette|shadow|contours?)\b"),
        ("anatomy", r"(?<!congestive )\bheart\b(?!\s+(?:failure|valve|border))"),
    ],
    "Lung Opacity": [
        ("finding", r"\bopaci" + _W),
        ("finding", r"\bdecreased\s+translucency\b"),
        ("finding", r"\bincreased\s+densit(?:y|ies)\b"),
        ("finding", r"\bair[\s-]?space\s+(?:disease|process)\b"),
        ("finding", r"\binfiltrat" + _W),
        ("finding", r"\binterstitial\s+(?:markings?|pattern|lung\s+disease|prominence|thickening|abnormality)\b"),
        ("finding", r"\breticular\s+(?:pattern|markings?)\b"),
        ("finding", r"\breticulation\b"),
        ("finding", r"\b(?:parenchymal\s+)?scar(?:ring|s)?\b"),
        ("finding", r"\b(?:peribronchial|bronchial\s+wall|wall)\s+thickening\b"),
        ("finding", r"\bhaz(?:iness|y)\b"),
        ("finding", r"\bground[\s-]glass\b"),
    ],
    "Lung Lesion": [
        ("finding", r"\bmass(?:es)?\b"),
        ("finding", r"\bnodul" + _W),
        ("finding", r"\blumps?\b"),
        ("finding", r"\bcavitary\s+lesions?\b"),
        ("finding", r"\bcarcinoma\b"),
        ("finding", r"\bneoplasm\b"),
        ("finding", r"\btumou?rs?\b"),
    ],
    "Edema": [
        ("finding", r"\bedema" + _W),
        ("finding", r"\boedema" + _W),
        ("finding", r"\bheart\s+failure\b"),
        ("finding", r"\bchf\b"),
        ("uncertain", r"\b(?:pulmonary\s+)?(?:vascular|venous)\s+congestion\b"),
        ("uncertain", r"\bpulmonary\s+congestion\b"),
        ("uncertain", r"\bindistinctness\b"),
        ("uncertain", r"\bvascular\s+prominence\b"),
    ],
    "Consolidation": [("finding", r"\bconsolidat" + _W)],
    "Pneumonia": [
        ("finding", r"\bpneumonias?\b"),
        ("finding", r"\binfectio(?:n|us)" + _W),
    ],
    "Atelectasis": [
        ("finding", r"\batelecta" + _W),
        ("finding", r"\bcollaps" + _W),
    ],
    "Pneumothorax": [("finding", r"\bpneumothora(?:x|ces)\b")],
    "Pleural Effusion": [
        ("finding", r"\beffusions?\b"),
        ("finding", r"\bpleural\s+fluid\b"),
    ],
    "Pleural Other": [
        ("finding", r"\bpleural\s+thickening\b"),
        ("finding", r"\bfibrosis\b"),
        ("finding", r"\bfibrothorax\b"),
        ("finding", r"\bpleural\s+scar" + _W),
        ("finding", r"\bpleural[\s-]parenchymal\s+scar" + _W),
        ("finding", r"\bpleuro-?(?:parenchymal|pericardial)\s+scar" + _W),
    ],
    "Fracture": [("finding", r"\bfractur" + _W)],
    "Support Devices": [
        ("finding", r"\bpacer\b"),
        ("finding", r"\blines?\b"),
        ("finding", r"\bpicc\b"),
        ("finding", r"\btubes?\b"),
        ("finding", r"\bvalves?\b"),
        ("finding", r"\bcatheters?\b"),
        ("finding", r"\bpacemakers?\b"),
        ("finding", r"\bhardware\b"),
        ("finding", r"\barthroplast" + _W),
        ("finding", r"\bmarkers?\b"),
        ("finding", r"\ba?icds?\b"),
        ("finding", r"\bdefib" + _W),
        ("finding", r"\bdevices?\b"),
        ("finding", r"\bdrains?\b"),
        ("finding", r"\bplates?\b"),
        ("finding", r"\bscrews?\b"),
        ("finding", r"\bcannula\b"),
        ("finding", r"\bapparatus\b"),
        ("finding", r"\bcoils?\b"),
        ("finding", r"\bsupport\b"),
        ("finding", r"\bequipment\b"),
        ("finding", r"\bmediport\b"),
        ("finding", r"\bport-?a-?cath\b"),
    ],
}

# The CheXpert labeler matches its phrases as plain substrings ("plate" in "endplate", "support" in
# "supporting", "tube" in "tuberculosis"; "_line_" is " line " with the spaces) and has no Support
# Devices unmention list: ``rules`` does the same for Support Devices (development set: F1 0.83 ->
# see README), ``rules-plus`` keeps the word-bounded list and its unmentions above.
CHEXPERT_SUPPORT_DEVICES: list[tuple[str, str]] = [
    ("finding", p) for p in (r"pacer", r" line ", r"lines", r"picc", r"tube", r"valve", r"catheter", r"pacemaker",
                             r"hardware", r"arthroplast", r"marker", r"icd", r"defib", r"device", r"drain ",
                             r"plate", r"screw", r"cannula", r"apparatus", r"coil", r"support", r"equipment",
                             r"mediport")]

# Literal substrings, one of which every mention pattern of the observation contains: a cheap
# `in` test skips the regexes of observations a report cannot mention (checked at start-up).
STEMS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastin", "contour", "pericardial"),
    "Cardiomegaly": ("cardiomegaly", "cardiac", "heart"),
    "Lung Opacity": ("opaci", "translucency", "densit", "space", "infiltrat", "interstitial", "reticula", "scar",
                     "thickening", "haz", "ground"),
    "Lung Lesion": ("mass", "nodul", "lump", "cavitary", "carcinoma", "neoplasm", "tumo"),
    "Edema": ("edema", "failure", "chf", "congestion", "indistinct", "prominence"),
    "Consolidation": ("consolidat",),
    "Pneumonia": ("pneumonia", "infectio"),
    "Atelectasis": ("atelecta", "collaps"),
    "Pneumothorax": ("pneumothora",),
    "Pleural Effusion": ("effusion", "fluid"),
    "Pleural Other": ("pleural", "fibro", "pleuro"),
    "Fracture": ("fractur",),
    "Support Devices": ("pace", "line", "picc", "tube", "valve", "catheter", "hardware", "arthroplast", "marker", "icd",
                        "defib", "device", "drain", "plate", "screw", "cannula", "apparatus", "coil", "support",
                        "equipment", "port"),
}

# Phrases that contain a mention but are not that observation (the CheXpert labeler's
# "unmention" lists, plus positional phrases such as "over the heart").
UNMENTIONS: dict[str, list[str]] = {
    "Pleural Effusion": [r"\bpericardial\s+effusions?\b"],
    "Lung Lesion": [r"\bcalcified\s+nodul" + _W, r"\bmassive\b", r"\bmass\s+effect\b"],
    "Lung Opacity": [r"\bpleural\s+scar" + _W, r"\bpleural[\s-]parenchymal\s+scar" + _W,
                     r"\bpleuro-?(?:parenchymal|pericardial)\s+scar" + _W],
    "Cardiomegaly": [r"\b(?:over|overlying|overlies|in|projecting\s+over|projects\s+over)\s+the\s+(?:superior\s+|left\s+|right\s+)?heart\b"],
    "Enlarged Cardiomediastinum": [
        r"\b(?:over|overlying|overlies|in|projecting\s+over|projects\s+over)\s+the\s+(?:superior\s+|left\s+|right\s+)?mediastinum\b",
        r"\bdiaphragm(?:atic)?\s+contours?\b", r"\bhemidiaphragm(?:atic)?\s+contours?\b",
        r"\bosseous\s+contours?\b", r"\bbony\s+contours?\b", r"\bcontours?\s+of\s+the\s+(?:diaphragm|hemidiaphragm|ribs?|spine)\b",
    ],
    "Support Devices": [
        r"\bkerley(?:\s+b)?\s+lines?\b", r"\bb-lines?\b", r"\bseptal\s+lines?\b", r"\bpleural\s+lines?\b",
        r"\bplate[\s-]?like\b", r"\bline\s+of\b", r"\blines?\s+of\s+demarcation\b", r"\bfissural\s+lines?\b",
        r"\bparaspinal\s+lines?\b", r"\bparaspinous\s+lines?\b", r"\bazygoesophageal\s+lines?\b",
        r"\bsupport\s+(?:of|for)\b", r"\bsupports?\s+the\b", r"\bplate\s+atelecta" + _W,
        r"\bend\s+plates?\b", r"\bendplates?\b",
    ],
}

# Other abnormalities (the CheXpert labeler's "no finding" mention list): they carry no label
# of their own but, when positive or uncertain, No Finding is not 1.
OTHER_FINDINGS = (
    r"\bemphysem" + _W, r"\bblunt" + _W, r"\bdensit(?:y|ies)\b", r"\belevation\b", r"\beventration\b",
    r"\bscoliosis\b", r"\bdegenera" + _W, r"\bcalcifi" + _W, r"\bhyperinflat" + _W,
    r"\bbronchospasm\b", r"\basthma\b", r"\bhernias?\b", r"\bcopd\b", r"\binterstitial\s+markings?\b",
    r"\bplaques?\b", r"\bosteophyt" + _W, r"\baortic\s+disease\b", r"\bbronchiolitis\b",
    r"\bairways?\s+disease\b", r"\bthickening\b", r"\bcephalization\b", r"\baspiration\b",
    r"\bbullae?\b", r"\bcontusions?\b", r"\batherosclero" + _W, r"\bosteopenia\b", r"\bmetasta" + _W,
    r"\bgranuloma" + _W, r"\bpneumomediastinum\b", r"\bpneumoperitoneum\b", r"\bosteodystrophy\b",
    r"\bcuffing\b", r"\birregular\s+lucency\b", r"\binflam" + _W, r"\bfissures?\b", r"\bhypertension\b",
    r"\bprominen" + _W, r"\bkyphosis\b", r"\bhyperexpansion\b", r"\bbullets?\b", r"\breticula" + _W,
    r"\bthoracentesis\b", r"\bbronchitis\b", r"\bvolume\s+loss\b", r"\bdeformit" + _W,
    r"\bhemorrhage\b", r"\bhematoma\b", r"\bradiopaque\b", r"\baerophagia\b", r"\barthropathy\b",
    r"\btracheostomy\b",
)
_OTHER = "_other"

# ------------------------------------------------------------------------------- cues
_COPULA_WORDS = (r"is|are|was|were|has|have|had|appears?|appeared|remains?|remained|seems?|looks?|be|been|"
                 r"may|might|could|can|cannot|would|should|will")
# Up to `n` words between a mention and its verb (a list subject: "heart size and pulmonary
# vascularity are normal"), none of them a verb itself, so the first verb decides.
_GAP = r"(?:\s*,?\s+(?!(?:" + _COPULA_WORDS + r"|not|no|and\s+the|there)\b)[\w\-]+){0,%d}?"
_COP = (r"\s*,?\s+(?:is|are|was|were|has|have|had|appears?|appeared|remains?|remained|seems?|looks?)"
        r"(?:\s+(?:been|now|otherwise|again|also|still|currently|essentially|grossly|completely|largely|"
        r"entirely|totally|nearly|almost|overall|stably|to\s+be|be))*")
_ADV = r"(?:\s+[a-z]+ly)?"
_NEGATED_STATE = (r"(?:normal|unremarkable|absent|resolved|removed|cleared|gone|disappeared|negative|"
                  r"within\s+(?:the\s+)?normal\s+limits|(?:at\s+)?(?:the\s+)?(?:upper|high)\s+limits?\s+of\s+normal|"
                  r"(?:top|upper|high)[\s-]normal|not\s+seen|not\s+identified|not\s+present|not\s+demonstrated|"
                  r"not\s+evident|not\s+detected|not\s+noted|not\s+observed|not\s+apparent|not\s+visible|"
                  r"no\s+longer\s+(?:seen|visualized|visible|present|evident|identified|demonstrated|apparent)|"
                  r"not" + _ADV + r"\s+(?:enlarged|increased|widened|dilated|prominent))")
_UNCERTAIN_STATE = (r"(?:possible|possibly\s+present|(?:un|less\s+)?likely|probable|suspected|questioned|questionable|suspicious|"
                    r"favou?red|considered|uncertain|equivocal|indeterminate|borderline|obscured|"
                    r"(?:poorly|incompletely|not\s+well|not\s+clearly|not\s+definitely)\s+(?:seen|visualized|"
                    r"evaluated|assessed|demonstrated|identified|appreciated)|difficult\s+to\s+(?:assess|evaluate|exclude))")

# Pre-negation uncertainty: decided before negation (CheXpert's "pre_negation_uncertainty").
PRE_NEG_UNCERTAIN = re.compile(
    r"\bno\s+new\b|\bno\s+evidence\s+to\s+rule\s+out\b"
    r"|\b(?:cannot|can\s+not|can't|could\s+not|couldn't|unable\s+to|difficult\s+to|hard\s+to)\s+(?:be\s+)?"
    r"(?:[a-z]+ly\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b")
POST_NEG_UNCERTAIN = re.compile(
    r"^" + (_GAP % 6) + r"(?:"
    r"\s*,?\s+(?:(?:is|are|was|were)\s+)?(?:not|cannot|can\s+not|can't|could\s+not|couldn't)\s+(?:be\s+)?(?:[a-z]+ly\s+)?(?:entirely\s+|completely\s+|totally\s+|definitely\s+)?(?:excluded|exclude|ruled\s+out|assessed|evaluated)\b"
    r"|" + _COP + r"\s+(?:not\s+(?:well|clearly|definitely)|poorly|incompletely)\s+(?:seen|visualized|evaluated|assessed|appreciated|demonstrated|identified)\b"
    r"|\s*,?\s+(?:(?:is|are|was|were)\s+)?not\s+(?:visualized|appreciated)\b"
    r")")

_NEG_CUES = (
    r"\bno\b(?!\s+new\b)", r"\bnot\b(?!\s+(?:be\s+)?(?:[a-z]+ly\s+)?(?:exclude|excluded|rule\s+out|ruled\s+out)\b)",
    r"\bwithout\b", r"\bfree\s+of\b", r"\bclear\s+of\b", r"\bnegative\s+for\b", r"\babsen(?:ce|t)\s+of\b",
    r"\bnor\b", r"\bneither\b", r"\bresolution\s+of\b", r"\bresolved\b", r"\bremoval\s+of\b", r"\bremoved\b",
    r"\bdisappearance\s+of\b", r"\bdrainage\s+of\b", r"\bclearing\s+of\b", r"\bhistory\s+of\b",
    r"\brather\s+than\b", r"(?<!cannot )(?<!can not )(?<!not )\brule\s+out\b",
    r"(?<!cannot )(?<!can not )(?<!not )(?<!difficult to )(?<!unable to )\bexclude\b",
)
_UNC_CUES = (
    r"\b(?:may|might|could)\b", r"\bpossibl[ey]\b", r"\bprobabl[ey]\b", r"\b(?:un)?likely\b",
    r"\bquestionabl[ey]\b", r"\bquestion(?:ed)?\s+of\b", r"\bsuspicious\b", r"\bsuspect(?:ed)?\b",
    r"\bsuspicion\b", r"\bconcern(?:ing)?\s+(?:for|of)\b", r"\bworrisome\b", r"(?<!to )\bsuggest(?:ive|s|ing|ion)?\b",
    r"\bdifferential\b", r"\bequivocal\b", r"\bindeterminate\b", r"\bborderline\b",
    r"\bpresum(?:ed|ably|ptive)\b", r"\bsecondary\s+to\b", r"\bcorrelat\w*\b", r"\bconsider(?:ed)?\b",
    r"\bfavou?r(?:ed|s)?\b", r"\bobscur\w*\b", r"\bcannot\s+be\s+(?:assessed|evaluated)\b",
)
_ADJECTIVE_UNC = re.compile(r"suspicious|worrisome|equivocal|indeterminate|borderline|questionabl[ey]")
# "X or Y" / "X versus Y": uncertain, but never overriding a negation (CheXpert: post-negation).
_WEAK_UNC_PRE = re.compile(r"(?:\bor\s+(?:[\w\-]+\s+){0,2}|\b(?:versus|vs)\s+(?:[\w\-]+\s+){0,3})$")
_WEAK_UNC_POST = re.compile(r"^(?:\s+|\s*,\s*[\w\-]+\s*,\s*)(?:or|versus|vs)\b(?!\s+not\b)")

# Pre-negation uncertainty first: at "no evidence to rule out" it must win over "no".
PRE_CUES = re.compile("(?P<pnu>" + PRE_NEG_UNCERTAIN.pattern + ")|"
                      + "|".join(f"(?P<neg{i}>{p})" for i, p in enumerate(_NEG_CUES)) + "|"
                      + "|".join(f"(?P<unc{i}>{p})" for i, p in enumerate(_UNC_CUES)))
# Words a cue can start with: PRE_CUES is only tried where one of them starts (much faster than
# scanning the whole alternation at every character).
_CUE_FIRST_WORDS = frozenset(
    "no not without free clear negative absence absent nor neither resolution resolved removal removed "
    "disappearance drainage clearing history rather rule exclude may might could likely unlikely question "
    "questioned suspicious suspect suspected suspicion concern concerning worrisome differential equivocal "
    "indeterminate borderline secondary cannot can can't couldn't unable difficult hard".split())
_CUE_FIRST_PREFIXES = ("possibl", "probabl", "questionabl", "suggest", "presum", "correlat", "consider", "favo", "obscur")
_WORD = re.compile(r"[a-z][a-z']*")


def find_cues(text: str) -> list[tuple[int, int, str, str]]:
    """PRE_CUES matches in ``text`` as (start, end, group, matched text), non-overlapping, left to right."""
    cues: list[tuple[int, int, str, str]] = []
    covered = 0
    for word in _WORD.finditer(text):
        start = word.start()
        token = word.group()
        if start < covered or not (token in _CUE_FIRST_WORDS or token.startswith(_CUE_FIRST_PREFIXES)):
            continue
        match = PRE_CUES.match(text, start)
        if match is not None:
            cues.append((start, match.end(), match.lastgroup or "", match.group()))
            covered = match.end()
    return cues


# "normal heart size", "unremarkable cardiomediastinal silhouette": a short-range negation.
PRE_NORMAL = re.compile(r"\b(?:normal|unremarkable|(?:top|upper|high)[\s-]normal)(?:[\s-]+(?:sized?|appearing|caliber))?\s+(?:[\w\-]+\s+){0,2}$")
# A verb between a negation cue and the mention closes the negated phrase
# ("no pneumothorax is seen and left effusion"), except "... to suggest/indicate X".
NEG_SCOPE_BREAK = re.compile(
    r"\b(?:is|are|was|were|has|have|had|been|seen|noted|identified|present|demonstrated|remains?|appears?|shows?)\b"
    r"(?!\s+(?:seen\s+|identified\s+|noted\s+|present\s+)?to\s+(?:suggest|indicate|explain|represent))")
POST_NEG = re.compile(
    r"^(?:" + (_GAP % 6) + _COP + _ADV + r"\s+" + _NEGATED_STATE +
    r"|(?:\s+[\w\-]+){0,2}?\s+(?:normal|unremarkable|within\s+(?:the\s+)?normal\s+limits|resolved|removed|absent|"
    r"not\s+(?:seen|identified|present|demonstrated|evident|enlarged))\b)")
POST_UNC = re.compile(
    r"^(?:" + (_GAP % 6) + _COP + _ADV + r"\s+" + _UNCERTAIN_STATE +
    r"|" + (_GAP % 6) + r"\s*,?\s+(?:may|might|could|can)\s+(?:also\s+)?(?:be\s+)?(?:[a-z]+ly\s+)?(?:present|seen|noted|enlarged|widened|prominent|increased|developing|considered|possible|there)\b"
    r"|(?:\s+[\w\-]+){0,2}?\s+(?:is\s+|are\s+)?(?:suspected|questioned|possible|likely|obscured)\b)")
# CheXpert: a stable / unchanged heart size or cardiomediastinal silhouette is uncertain.
ANATOMY_STABLE_PRE = re.compile(r"\b(?:stable|unchanged|similar)\s+(?:[\w\-]+\s+){0,2}$")
ANATOMY_STABLE_POST = re.compile(
    r"^(?:" + (_GAP % 6) + _COP + _ADV + r"\s+(?:stable|unchanged|similar|not\s+(?:significantly\s+)?changed)\b"
    r"|\s+(?:stable|unchanged)\b)")
# --- the CheXpert labeler's own quirks (``rules``; ``rules-plus`` leaves them out) --------------------
# Its negations are dependency-graph patterns over a parse (NegBio + BLLIP); where the parse attaches a
# state word to another subject the mention stays positive. Measured on the development set
# (chexpert_labeler_openi_train_positives.jsonl, positives of the real labeler):
# - "the heart" (a mention phrase of its own) in "the heart size and Y appear within normal limits" is
#   not negated (Cardiomegaly positive in 35 of 58 such reports; without "the": 0 of 22);
QUIRK_THE_HEART_APPEAR = re.compile(
    r"^(?:\s+size)?\s+and\s+(?:(?!(?:is|are|was|were|appears|seems)\b)[\w\-]+\s+){1,3}?appear\s+within\s+(?:the\s+)?normal\s+limits\b")
# - the second subject of "X and mediastinum of normal size and contour" is not negated (Enlarged
#   Cardiomediastinum positive in 24 of 24);
QUIRK_OF_NORMAL_SIZE = re.compile(r"^\s+of\s+normal\s+size\b")
QUIRK_AND_BEFORE = re.compile(r"\band\s+$")
# - "upper limits of normal", "top normal" and "borderline" are no negation or uncertainty for it
#   ("heart size is upper limits of normal": positive in 16 of 18; "borderline": 22 of 27);
QUIRK_UPPER_NORMAL = re.compile(
    r"^" + (_GAP % 3) + r"(?:" + _COP + r")?(?:\s+(?:at|near))?(?:\s+the)?\s+(?:(?:upper|high)\s+limits?\s+(?:of\s+)?normal"
    r"|top[\s-]normal|borderline)\b")
QUIRK_BORDERLINE_PRE = re.compile(r"\bborderline\s+(?:[\w\-]+\s+){0,1}$")
# - "no pleural effusions or pneumothorax" leaves the pneumothorax positive (14 of 14; singular
#   "no pleural effusion or pneumothorax": 0 of 230; "... or pneumothoraces": 0 of 61), nor is
#   ", or focal air space consolidation" (5 of 7; "airspace" in one word: 0 of 7);
QUIRK_PLURAL_OR_PRE = re.compile(r"\bno\s+pleural\s+effusions\s+or\s+$")
QUIRK_AIR_SPACE_PRE = re.compile(r",\s+or\s+(?:[a-z]+\s+)?air\s+space\s+$")
# - "no <modifiers> rib fractures" (plural, with a modifier between) leaves the fracture positive
#   (18 of 25 reports with "no ... displaced ... fractures"; a bare "no fractures": 0 of 8);
QUIRK_MODIFIED_PLURAL_FRACTURES_PRE = re.compile(r"\bno\s+(?:evidence\s+of\s+)?(?:[a-z\-]+,?\s+){1,3}$")
# - "the heart" with no negation or uncertainty is positive even without an abnormality word ("the
#   heart and lungs have XXXX XXXX in the interval": positive in 42 of 42; "sternotomy wires overlie
#   the heart"); other neutral anatomy ("heart size", "cardiomediastinal silhouette") still needs
#   one: positive by default it costs far more than it gains (measured: Enlarged Cardiomediastinum
#   F1 0.33 -> 0.27).

ABNORMAL = re.compile(r"\b(?:enlarg\w*|large|larger|prominen\w*|widen\w*|dilat\w*|increas\w*|cardiomegaly|globular|big|massive|tortuous)\b")

# Clause boundaries: sentence ends, semicolons, contrastive or new-clause words.
BOUNDARY = re.compile(
    r"[.!?](?=\s|$)|;|\n\s*\n|\b(?:but|however|although|though|whereas|while|which|except|apart\s+from|aside\s+from|other\s+than)\b"
    r"|\band\s+(?=(?:the|there|this|it|a|an)\b)|,\s*(?=(?:the|there|this|these|it|and\s+the|and\s+there|again|also|with)\b)"
    # ", mild cardiomegaly" starts a new finding, unless the sentence goes on as a list
    # ("no consolidation, large effusion, or pneumothorax").
    r"|,\s*(?=(?:mild|mildly|moderate|moderately|severe|small|large|minimal|trace|tiny|stable|persistent|increased|"
    r"increasing|decreased|decreasing|improved|improving|worsening|worsened|unchanged|new|redemonstrat\w*)\b)(?![^.;]*\b(?:or|nor)\b)"
    r"|\bthere\s+(?=(?:is|are|has|have)\b)")

_REWRITES = (  # (substring that must be present, pattern, replacement)
    ("/", re.compile(r"\band/or\b"), "or"),
    ("/", re.compile(r"\br/o\b"), "rule out"),
    ("/", re.compile(r"\bs/p\b"), "status post"),
    ("/", re.compile(r"\bw/o\b"), "without"),
    ("/", re.compile(r"\bw/"), "with "),
    ("/", re.compile(r"(?<=[a-z])/(?=[a-z])"), " or "),
    ("vs", re.compile(r"\bvs\.?(?=\s)"), "versus"),
    ("change", re.compile(r"\b(?:no|without)\s+(?:(?:significant|appreciable|substantial|interval|definite|radiographic|"
                r"other|further|major|real)\s+)*change(?:s)?(?:\s+(?:in|of))?\b"), "unchanged"),
    ("change", re.compile(r"\b(?:has|have|had|is|are)\s+not\s+(?:significantly\s+|substantially\s+)?changed\b"), "is unchanged"),
    ("change", re.compile(r"\bnot\s+(?:significantly\s+|substantially\s+)?changed\b"), "unchanged"),
    ("..", re.compile(r"\.\.+"), "."),
)
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Mention:
    """A mention of an observation: its span in the cleaned text, kind and label."""

    observation: str
    start: int
    end: int
    kind: str
    label: int | None


def clean_report(text: str) -> str:
    """Lower case, rewrite slashes and misleading negations, normalise spaces (keep blank lines)."""
    text = text.lower()
    for needle, pattern, replacement in _REWRITES:
        if needle in text:  # skip the regex when its key substring is absent
            text = pattern.sub(replacement, text)
    # Single newlines become spaces; a blank line stays (BOUNDARY treats it as a sentence end).
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in _BLANK_LINES.split(text)).strip()


def _compile_alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


@dataclass
class _ObservationMatcher:
    observation: str
    by_kind: dict[str, re.Pattern[str]]
    unmention: re.Pattern[str] | None
    stems: tuple[str, ...] = ()


class RuleLabeler(Labeler):
    """Regex implementation of the CheXpert labeler's mention / negation / uncertainty rules."""

    description = "rule-based CheXpert labeler (offline; mention lexicon, negation/uncertainty scope, No Finding rule)"
    needs = "nothing"
    chexpert_quirks: bool = True  # reproduce the CheXpert labeler's parse quirks (see QUIRK_* above)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._matchers: list[_ObservationMatcher] = []
        mentions = dict(MENTIONS)
        unmention_lists = dict(UNMENTIONS)
        if self.chexpert_quirks:
            mentions["Support Devices"] = CHEXPERT_SUPPORT_DEVICES
            del unmention_lists["Support Devices"]
        for observation, phrases in mentions.items():
            by_kind: dict[str, list[str]] = {}
            for kind, pattern in phrases:
                by_kind.setdefault(kind, []).append(pattern)
                stems = STEMS[observation]
                if not any(stem in pattern for stem in stems):  # keep STEMS in step with MENTIONS
                    raise AssertionError(f"mention pattern {pattern!r} of {observation} contains none of {stems}")
            unmentions = unmention_lists.get(observation)
            self._matchers.append(_ObservationMatcher(
                observation, {k: _compile_alternation(v) for k, v in by_kind.items()},
                _compile_alternation(unmentions) if unmentions else None, STEMS[observation]))
        self._matchers.append(_ObservationMatcher(_OTHER, {"finding": _compile_alternation(OTHER_FINDINGS)}, None))

    def describe(self) -> dict[str, Any]:
        return {"labeler": "rules", "labeler_version": "2"}

    # ------------------------------------------------------------------ public

    def label(self, reports: list[str]) -> list[Labels]:
        from tqdm.auto import tqdm

        # A progress bar only where it lasts long enough to matter (~1 s per 5,000 reports).
        show = bool(self.options.get("progress", True)) and len(reports) >= 20000
        return [self.label_one(report) for report in tqdm(reports, desc="CheXpert rules", unit="report",
                                                          disable=not show)]

    def label_one(self, report: str) -> Labels:
        labels = blank_labels()
        if not report or not report.strip():
            return labels
        found: dict[str, set[int]] = {}
        for mention in self.mentions(report):
            if mention.label is not None:
                found.setdefault(mention.observation, set()).add(mention.label)
                # CheXpert labeler rule: heart failure suggests (uncertain) cardiomegaly.
                if (mention.observation == "Edema" and mention.label in (POSITIVE, UNCERTAIN)
                        and mention.kind == "chf"):
                    found.setdefault("Cardiomegaly", set()).add(UNCERTAIN)
        for observation, values in found.items():
            if observation == _OTHER:
                continue
            # Aggregation: positive > uncertain > negative.
            labels[observation] = POSITIVE if POSITIVE in values else UNCERTAIN if UNCERTAIN in values else NEGATIVE
        abnormal = any(values & {POSITIVE, UNCERTAIN} for obs, values in found.items() if obs != "Support Devices")
        labels["No Finding"] = None if abnormal else 1
        return labels

    def mentions(self, report: str) -> list[Mention]:
        """Every mention in ``report`` with its label (None: neutral anatomy, no label)."""
        text = clean_report(report)
        boundaries = [(m.start(), m.end()) for m in BOUNDARY.finditer(text)]
        starts = [b[0] for b in boundaries]
        # Negation / uncertainty cues of the whole text, found once: (start, end, group, text).
        cues = find_cues(text)
        cue_starts = [c[0] for c in cues]
        result: list[Mention] = []
        for matcher in self._matchers:
            if matcher.stems and not any(stem in text for stem in matcher.stems):
                continue
            unmention_spans = [m.span() for m in matcher.unmention.finditer(text)] if matcher.unmention else []
            for kind, pattern in matcher.by_kind.items():
                for match in pattern.finditer(text):
                    start, end = match.span()
                    if any(start < u_end and end > u_start for u_start, u_end in unmention_spans):
                        continue
                    # Clause: after the last boundary ending at or before the mention, up to the
                    # first boundary starting at or after its end.
                    i = bisect.bisect_right(starts, start) - 1
                    while i >= 0 and boundaries[i][1] > start:
                        i -= 1
                    clause_start = boundaries[i][1] if i >= 0 else 0
                    j = bisect.bisect_left(starts, end)
                    clause_end = boundaries[j][0] if j < len(boundaries) else len(text)
                    pre, post = text[clause_start:start], text[end:clause_end]
                    first = bisect.bisect_left(cue_starts, clause_start)
                    last = bisect.bisect_left(cue_starts, start)
                    pre_cues = [(s - clause_start, e - clause_start, g, t) for s, e, g, t in cues[first:last] if e <= start]
                    label = self._decide(kind, pre, post, pre_cues, match.group())
                    if kind == "finding" and matcher.observation == "Edema" and re.match(r"chf|heart\s+failure", match.group()):
                        kind = "chf"
                    result.append(Mention(matcher.observation, start, end, kind, label))
        return result

    # ------------------------------------------------------------------ rules

    @staticmethod
    def _pre_cue(pre: str, cues: list[tuple[int, int, str, str]]) -> tuple[str | None, bool]:
        """The decisive cue before a mention: ("pnu" | "neg" | "unc" | None, weak-uncertainty?).

        ``cues``: the PRE_CUES matches inside ``pre`` as (start, end, group, text)."""
        last_neg = last_unc = last_pnu = None
        for cue in cues:
            group = cue[2]
            if group == "pnu":
                last_pnu = cue
            elif group.startswith("neg"):
                last_neg = cue
            else:
                last_unc = cue
        # A verb after the negation cue closes its scope.
        if last_neg is not None and NEG_SCOPE_BREAK.search(pre, last_neg[1]):
            last_neg = None
        if last_pnu is not None and NEG_SCOPE_BREAK.search(pre, last_pnu[1]):
            last_pnu = None
        if last_pnu is not None and (last_neg is None or last_pnu[1] >= last_neg[0]):
            return "pnu", False
        weak = _WEAK_UNC_PRE.search(pre) is not None
        if last_neg is not None:
            # An explicit uncertainty cue in a later list item wins ("no effusion, possible
            # atelectasis"); in the same item the negation wins ("no suspicious nodule").
            # Adjectives such as "suspicious" stay inside the negated list ("no consolidation,
            # suspicious opacity, effusion, or pneumothorax").
            if (last_unc is not None and last_unc[0] > last_neg[1]
                    and "," in pre[last_neg[1]:last_unc[0]] and "," not in pre[last_unc[1]:]
                    and not _ADJECTIVE_UNC.fullmatch(last_unc[3])):
                return "unc", weak
            return "neg", weak
        if PRE_NORMAL.search(pre):
            return "neg", weak
        if last_unc is not None:
            return "unc", weak
        return None, weak

    def _decide(self, kind: str, pre: str, post: str, pre_cues: list[tuple[int, int, str, str]],
                mention: str = "") -> int | None:
        if post.startswith(":"):  # "heart: normal size"
            post = post[1:]
        if self.chexpert_quirks and kind in ("finding", "anatomy"):
            the_heart = mention.startswith("heart") and pre.endswith("the ")
            only_borderline = all(c[3] == "borderline" for c in pre_cues)
            if only_borderline and (QUIRK_UPPER_NORMAL.match(post) or QUIRK_BORDERLINE_PRE.search(pre)
                                    or (the_heart and QUIRK_THE_HEART_APPEAR.match(post))
                                    or (QUIRK_OF_NORMAL_SIZE.match(post) and QUIRK_AND_BEFORE.search(pre))):
                return POSITIVE
            if (kind == "finding" and mention == "fractures"
                    and QUIRK_MODIFIED_PLURAL_FRACTURES_PRE.search(pre) and len(pre_cues) == 1):
                return POSITIVE
            if kind == "finding" and ((mention == "pneumothorax" and QUIRK_PLURAL_OR_PRE.search(pre))
                                     or QUIRK_AIR_SPACE_PRE.search(pre)):
                return POSITIVE
        cue, weak_pre = self._pre_cue(pre, pre_cues)
        if cue == "pnu" or POST_NEG_UNCERTAIN.match(post):
            return UNCERTAIN
        if cue == "neg" or POST_NEG.match(post):
            return NEGATIVE
        if (cue == "unc" or weak_pre or POST_UNC.match(post) or _WEAK_UNC_POST.match(post)
                or kind == "uncertain"):
            return UNCERTAIN
        if kind == "anatomy":
            if ANATOMY_STABLE_PRE.search(pre) or ANATOMY_STABLE_POST.match(post):
                return UNCERTAIN
            if self.chexpert_quirks and mention == "heart" and pre.endswith("the "):
                return POSITIVE
            return POSITIVE if ABNORMAL.search(pre) or ABNORMAL.search(post) else None
        return POSITIVE


LABELERS.register("rules")(RuleLabeler)


@LABELERS.register("rules-plus")
class RulesPlusLabeler(RuleLabeler):
    """``rules`` without the CheXpert labeler's quirks: neutral anatomy needs an abnormality word,
    "upper limits of normal" / "borderline" are read as the words say, every conjunct is negated.
    Better text understanding, but *not* the CheXpert labeler: never report it as ``chexpert_*``
    next to published numbers without saying so."""

    description = ("rule-based CheXpert-style labeler with the CheXpert labeler's parse quirks removed "
                   "(not comparable with published CheXpert-labeler numbers)")
    chexpert_quirks = False

    def describe(self) -> dict[str, Any]:
        return {"labeler": "rules-plus", "labeler_version": "1"}

__all__ = ["MENTIONS", "OTHER_FINDINGS", "UNMENTIONS", "Mention", "RuleLabeler", "clean_report"]
