"""RadFact-style metrics for grounded reports (MAIRA-2's RadFact, microsoft/RadFact).

A report is a list of *grounded sentences* (text plus zero or more boxes). Each generated
sentence is judged against the reference report's sentences (logical precision side) and each
reference sentence against the generated ones (recall side); an entailed sentence has
*evidence*, the sentences of the other report that support it. Per study and direction:

- logical precision / recall: entailed sentences / all sentences;
- grounding precision / recall: spatially entailed sentences / entailed sentences with boxes;
- spatial precision / recall: spatially entailed sentences / all sentences with boxes.

A sentence with boxes is **spatially entailed** when it is logically entailed and more than
``threshold`` (0.5) of its box pixels lie inside the union of its evidence sentences' boxes,
both drawn as masks of ``mask_size`` x ``mask_size`` (224) pixels over the image normalised to
0..1 (each corner ``int(coordinate / side * mask_size)``, end exclusive, as RadFact rasterises
its boxes). No evidence box, or a box that covers no mask pixel, is not entailed. Boxes on
different images of a study are compared image by image (RadFact has one image).

Corpus values are the means over studies, ignoring studies where a value is undefined (NaN:
no sentence, or no boxed / entailed boxed sentence), as RadFact's ``np.nanmean``; the F1s
(``radfact_logical_f1`` ...) come from the corpus precision and recall.

Sentences: reports are split with :func:`boxmed_model.cot.split_sentences` (the split the
BoxMed-RL plugin grounds). A box belongs to the sentence whose text equals its ``phrase``
(after RadFact's normalisation), else to the first sentence that contains the phrase or is
contained in it, else to the first sentence that entails the phrase by the rules judge
("Left basilar opacity." -> "There is patchy opacity at the left lung base."); a reference box
whose phrase matches no sentence becomes a grounded sentence of its own; a predicted box
without a phrase, or whose phrase matches no sentence, is left out and counted
(``radfact_unplaced_boxes``).

Judges (option ``entailment``): ``rules`` (default; no model, see
:mod:`boxmed_eval.metrics.entailment`) or ``llm`` (RadFact's prompt through ``judge=`` a local
model or an OpenAI-compatible server; ``llm`` is chosen when a judge is given). Failed judge
calls (a reply that does not parse) are, like RadFact, *not entailed* (``failures=not_entailed``)
and always counted: ``radfact_judge_failures`` (corpus total and per study); the named
variant ``failures=exclude`` leaves failed sentences out of every denominator instead. A study
where the LLM cites evidence that is not a sentence of the other report is dropped by RadFact
(its scores are NaN here too), counted in ``radfact_invalid_samples``.

Every judged sentence is written to ``radfact_sentences.csv`` in the run directory (report,
text, number of boxes, verdict, evidence, spatial status), to audit the numbers; the reference
sentences' text only for a registered public dataset (``iu_xray``, ``demo``), never for
credentialed or unnamed data.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from boxmed_eval.errors import BoxmedError, DataError, MissingResourceError
from boxmed_eval.judges.metric import JUDGE_OPTIONS, JudgedMetric
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.metrics.entailment import (ENTAILMENT, Verdict, entailment_prompt, normalise_for_comparison,
                                            parse_entailment_reply, rules_verdict)
from boxmed_eval.records import Box, Prediction, Study

log = logging.getLogger(__name__)

MASK_SIZE = 224  # RadFactMetric(image_size=224)
BOX_PRECISION_THRESHOLD = 0.5  # RadFactMetric(box_precision_threshold=0.5), compared with ">"
ENTAILMENT_JUDGES = ("rules", "llm")
FAILURE_RULES = ("not_entailed", "exclude")
SCORE_NAMES = ("logical_precision", "logical_recall", "grounding_precision", "grounding_recall",
               "spatial_precision", "spatial_recall")
NAN = float("nan")


# ------------------------------------------------------------------------------- boxes and masks

@dataclass(frozen=True)
class NormBox:
    """A box in 0..1 image coordinates (x: left to right of the image as displayed)."""

    x1: float
    y1: float
    x2: float
    y2: float
    image_index: int = 0


def normalise_box(box: Box, size: tuple[int, int] | None = None, *, where: str = "") -> NormBox:
    """``box`` (pixels) in 0..1 of its image, clamped to the image. The image size is the
    box's own (``image_width``/``image_height``), else ``size``."""
    width = box.image_width or (size[0] if size else None)
    height = box.image_height or (size[1] if size else None)
    if not width or not height:
        raise DataError("a box has no image size, so it cannot be put on RadFact's normalised mask",
                        record=where or None,
                        fix="record image_width and image_height on every box (predictions.jsonl boxes)")

    def clamp(value: float) -> float:
        return min(max(value, 0.0), 1.0)

    return NormBox(clamp(box.x1 / width), clamp(box.y1 / height), clamp(box.x2 / width), clamp(box.y2 / height),
                   box.image_index)


def box_mask(boxes: Sequence[NormBox], mask_size: int = MASK_SIZE) -> np.ndarray:
    """The union of ``boxes`` as a ``mask_size`` x ``mask_size`` boolean mask (rows: y)."""
    mask = np.zeros((mask_size, mask_size), dtype=bool)
    for box in boxes:
        # int() truncates like RadFact's astype(int); the end is exclusive
        x1, y1, x2, y2 = (int(v * mask_size) for v in (box.x1, box.y1, box.x2, box.y2))
        mask[y1:y2, x1:x2] = True
    return mask


def box_precision(boxes: Sequence[NormBox], evidence: Sequence[NormBox], mask_size: int = MASK_SIZE) -> float:
    """Share of the pixels of ``boxes`` inside the union of ``evidence`` (image by image);
    NaN when ``boxes`` cover no pixel."""
    inside = total = 0
    for image in sorted({b.image_index for b in boxes}):
        mine = box_mask([b for b in boxes if b.image_index == image], mask_size)
        theirs = box_mask([b for b in evidence if b.image_index == image], mask_size)
        inside += int((mine & theirs).sum())
        total += int(mine.sum())
    return inside / total if total else NAN


def spatially_entailed(boxes: Sequence[NormBox], evidence: Sequence[NormBox], *, mask_size: int = MASK_SIZE,
                       threshold: float = BOX_PRECISION_THRESHOLD) -> bool:
    """RadFact's rule: no evidence box -> False; else box pixel precision > ``threshold``."""
    if not evidence:
        return False
    precision = box_precision(boxes, evidence, mask_size)
    return bool(precision > threshold)  # NaN (an empty box) compares False


# ------------------------------------------------------------------------------ grounded reports

@dataclass
class GroundedSentence:
    text: str
    boxes: list[NormBox] = field(default_factory=list)
    source_boxes: list[Box] = field(default_factory=list)  # the boxes as given (pixels)


def split_report(text: str) -> list[str]:
    from boxmed_model.cot import split_sentences

    return split_sentences(text)


def _sentence_for(phrase: str, sentences: Sequence[str]) -> int:
    target = normalise_for_comparison(phrase)
    if not target:
        return -1
    normalised = [normalise_for_comparison(s) for s in sentences]
    for index, sentence in enumerate(normalised):
        if sentence == target:
            return index
    for index, sentence in enumerate(normalised):
        if sentence and (target in sentence or sentence in target):
            return index
    # not verbatim (MS-CXR phrases rarely are): the first sentence that entails the phrase
    verdict = rules_verdict(list(sentences), phrase)
    return verdict.evidence[0] if verdict.entailed and verdict.evidence else -1


def grounded_report(text: str, boxes: Sequence[Box], *, image_size: tuple[int, int] | None = None,
                    own_sentences_for_unplaced: bool, where: str = "") -> tuple[list[GroundedSentence], int]:
    """The grounded sentences of a report and how many boxes found no sentence (see the
    module docstring). ``own_sentences_for_unplaced``: such a box becomes a sentence (reference
    boxes) instead of being left out (predicted boxes)."""
    sentences = [GroundedSentence(s) for s in split_report(text)]
    unplaced = 0
    extra: dict[str, GroundedSentence] = {}
    for box in boxes:
        index = _sentence_for(box.phrase, [s.text for s in sentences])
        if index >= 0:
            target = sentences[index]
        elif own_sentences_for_unplaced and normalise_for_comparison(box.phrase):
            key = normalise_for_comparison(box.phrase)
            target = extra.setdefault(key, GroundedSentence(box.phrase.strip()))
        else:
            unplaced += 1
            continue
        target.boxes.append(normalise_box(box, image_size, where=where))
        target.source_boxes.append(box)
    return sentences + list(extra.values()), unplaced


def study_image_size(study: Study | None) -> tuple[int, int] | None:
    """The image size the study's boxes record (for predicted boxes that lack one)."""
    for box in (study.boxes if study else []):
        if box.image_width and box.image_height:
            return box.image_width, box.image_height
    return None


# ------------------------------------------------------------------------------------- scoring

@dataclass
class OneWay:
    """One direction of one study (the generated sentences for precision, the reference ones
    for recall): the three fractions and the counts behind them."""

    entailed_fraction: float
    grounding_fraction: float  # spatially entailed / entailed with boxes
    spatial_fraction: float  # spatially entailed / with boxes
    sentences: int
    boxed: int
    entailed: int
    spatially_entailed: int
    failures: int


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else NAN


def one_way(sentences: Sequence[GroundedSentence], verdicts: Sequence[Verdict], premises: Sequence[GroundedSentence],
            *, mask_size: int = MASK_SIZE, threshold: float = BOX_PRECISION_THRESHOLD,
            failures: str = "not_entailed") -> tuple[OneWay, list[str]]:
    """Score one direction; also returns each sentence's spatial status (``no_boxes`` /
    ``spatial_entailment`` / ``no_spatial_entailment``, or ``excluded``)."""
    statuses: list[str] = []
    counted = entailed = boxed = entailed_boxed = spatial = failed = 0
    for sentence, verdict in zip(sentences, verdicts, strict=True):
        failed += verdict.failed
        if verdict.failed and failures == "exclude":
            statuses.append("excluded")
            continue
        counted += 1
        is_entailed = verdict.status == ENTAILMENT
        entailed += is_entailed
        if not sentence.boxes:
            statuses.append("no_boxes")
            continue
        boxed += 1
        entailed_boxed += is_entailed
        evidence = [b for i in verdict.evidence for b in premises[i].boxes]
        ok = is_entailed and spatially_entailed(sentence.boxes, evidence, mask_size=mask_size, threshold=threshold)
        spatial += ok
        statuses.append("spatial_entailment" if ok else "no_spatial_entailment")
    return OneWay(_ratio(entailed, counted), _ratio(spatial, entailed_boxed), _ratio(spatial, boxed), counted, boxed,
                  entailed, spatial, failed), statuses


def f1(precision: float, recall: float) -> float:
    if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
        return NAN if (math.isnan(precision) or math.isnan(recall)) else 0.0
    return 2 * precision * recall / (precision + recall)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


@dataclass
class StudyJudgement:
    """Everything the metric decided for one study (``figures cases`` shows it)."""

    candidate: list[GroundedSentence]
    reference: list[GroundedSentence]
    candidate_verdicts: list[Verdict]
    reference_verdicts: list[Verdict]
    precision_side: OneWay | None = None
    recall_side: OneWay | None = None
    candidate_status: list[str] = field(default_factory=list)
    reference_status: list[str] = field(default_factory=list)
    valid: bool = True
    unplaced_boxes: int = 0


def sentence_table(judged: dict[str, StudyJudgement], *, reference_text: bool = True) -> pd.DataFrame:
    """One row per judged sentence (RadFact's per-sample export, flattened): which report it is
    from, its text and boxes, the verdict, its evidence (sentence numbers of the other report,
    from 1) and its spatial status. ``reference_text=False`` leaves the reference sentences'
    text out (credentialed or unknown data must not spread beyond its files)."""
    rows = []
    for study_id, j in judged.items():
        for side, sentences, verdicts, statuses in (("generated", j.candidate, j.candidate_verdicts, j.candidate_status),
                                                    ("reference", j.reference, j.reference_verdicts, j.reference_status)):
            for number, (sentence, verdict, status) in enumerate(zip(sentences, verdicts, statuses), start=1):
                text = sentence.text if (reference_text or side == "generated") else ""
                rows.append({"id": study_id, "report": side, "sentence": number, "text": text,
                             "boxes": len(sentence.boxes), "status": verdict.status, "failed": verdict.failed,
                             "evidence": " ".join(str(i + 1) for i in verdict.evidence), "spatial": status,
                             "study_valid": j.valid})
    columns = ["id", "report", "sentence", "text", "boxes", "status", "failed", "evidence", "spatial", "study_valid"]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------------- the metric

@METRICS.register("radfact")
class RadFactMetric(Metric):
    description = ("RadFact-style logical, grounding and spatial precision/recall of grounded reports: sentence "
                   "entailment both ways (rules judge, or RadFact's LLM prompt with judge=...) and box spatial "
                   "entailment on RadFact's 224x224 mask")
    needs = ("nothing for the rules judge (boxes in predictions and studies for the grounding/spatial numbers); "
             "entailment=llm: --judge radfact=PATH_OR_URL (or --metric-option radfact.judge=...)")
    provides = tuple(f"radfact_{n}" for n in SCORE_NAMES) + (
        "radfact_logical_f1", "radfact_grounding_f1", "radfact_spatial_f1", "radfact_judge_failures",
        "radfact_invalid_samples", "radfact_unplaced_boxes", "radfact_samples")
    default = False  # asked for by name: --metrics radfact

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        judge_given = bool(options.get("judge"))
        self.entailment = str(options.get("entailment") or ("llm" if judge_given else "rules"))
        if self.entailment not in ENTAILMENT_JUDGES:
            raise BoxmedError(f"--metric-option radfact.entailment={self.entailment!r}: choose one of "
                              f"{', '.join(ENTAILMENT_JUDGES)}")
        self.failures = str(options.get("failures") or "not_entailed")
        if self.failures not in FAILURE_RULES:
            raise BoxmedError(f"--metric-option radfact.failures={self.failures!r}: choose one of "
                              f"{', '.join(FAILURE_RULES)} (not_entailed is RadFact's rule)")
        self.mask_size = self._number("mask_size", int, MASK_SIZE)
        self.threshold = self._number("threshold", float, BOX_PRECISION_THRESHOLD)
        if not 0.0 <= self.threshold < 1.0:
            raise BoxmedError(f"--metric-option radfact.threshold={self.threshold}: expected 0 <= threshold < 1")
        self._judge: Any = None
        if self.entailment == "llm":
            if not judge_given:
                self._judge_error = ("radfact.entailment=llm needs a judge: --metric-option radfact.judge=PATH "
                                     "(a local model directory) or radfact.judge=http://HOST:PORT/v1")
            else:
                self._judge_error = ""
                self._judge = RadFactJudge(**{k: v for k, v in options.items() if k in JUDGE_OPTIONS})

    def _number(self, key: str, kind: type, default: Any) -> Any:
        value = self.options.get(key)
        if value in (None, ""):
            return default
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise BoxmedError(f"--metric-option radfact.{key}={value!r}: expected a number") from None
        if kind is int and number < 1:
            raise BoxmedError(f"--metric-option radfact.{key}={value!r}: expected a positive whole number")
        return number

    def available(self) -> tuple[bool, str]:
        if self.entailment == "llm":
            if self._judge is None:
                return False, self._judge_error
            return self._judge.available()
        return True, ""

    # -- judging -------------------------------------------------------------------------------

    def _verdicts(self, queries: list[tuple[list[str], str]]) -> list[Verdict]:
        if self.entailment == "rules":
            return [rules_verdict(premises, hypothesis) for premises, hypothesis in queries]
        prompts = [entailment_prompt(premises, hypothesis) for premises, hypothesis in queries]
        replies = self._judge.judge(prompts) if prompts else []
        return [parse_entailment_reply(reply, premises, hypothesis)
                for reply, (premises, hypothesis) in zip(replies, queries)]

    def judge_studies(self, references: dict[str, str], hypotheses: dict[str, str], *,
                      studies: dict[str, Study] | None = None,
                      predictions: dict[str, Prediction] | None = None) -> dict[str, StudyJudgement]:
        """Grounded sentences, verdicts and scores of every study."""
        studies = studies or {}
        predictions = predictions or {}
        judged: dict[str, StudyJudgement] = {}
        queries: list[tuple[list[str], str]] = []
        for study_id in references:
            study = studies.get(study_id)
            prediction = predictions.get(study_id)
            size = study_image_size(study)
            where = f"study {study_id}"
            reference, _ = grounded_report(references[study_id], study.boxes if study else [], image_size=size,
                                           own_sentences_for_unplaced=True, where=where)
            candidate, unplaced = grounded_report(hypotheses[study_id], prediction.boxes if prediction else [],
                                                  image_size=size, own_sentences_for_unplaced=False, where=where)
            judged[study_id] = StudyJudgement(candidate, reference, [], [], unplaced_boxes=unplaced)
            ref_texts = [s.text for s in reference]
            cand_texts = [s.text for s in candidate]
            queries += [(ref_texts, s.text) for s in candidate] + [(cand_texts, s.text) for s in reference]
        verdicts = iter(self._verdicts(queries))
        for judgement in judged.values():
            judgement.candidate_verdicts = [next(verdicts) for _ in judgement.candidate]
            judgement.reference_verdicts = [next(verdicts) for _ in judgement.reference]
            everything = judgement.candidate_verdicts + judgement.reference_verdicts
            # RadFact drops a study whose answers cite evidence from outside the other report
            judgement.valid = all(v.valid_evidence for v in everything)
            options = {"mask_size": self.mask_size, "threshold": self.threshold, "failures": self.failures}
            judgement.precision_side, judgement.candidate_status = one_way(
                judgement.candidate, judgement.candidate_verdicts, judgement.reference, **options)
            judgement.recall_side, judgement.reference_status = one_way(
                judgement.reference, judgement.reference_verdicts, judgement.candidate, **options)
        return judged

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        judged = self.judge_studies(references, hypotheses, studies=studies, predictions=predictions)
        per: dict[str, dict[str, float]] = defaultdict(dict)
        failures = invalid = unplaced = rewrites = 0
        for study_id, j in judged.items():
            p, r = j.precision_side, j.recall_side
            assert p is not None and r is not None
            values = dict(zip(SCORE_NAMES, (p.entailed_fraction, r.entailed_fraction, p.grounding_fraction,
                                            r.grounding_fraction, p.spatial_fraction, r.spatial_fraction)))
            if not j.valid:
                values = {k: NAN for k in values}
                invalid += 1
            for name, value in values.items():
                per[f"radfact_{name}"][study_id] = value
            per["radfact_judge_failures"][study_id] = float(p.failures + r.failures)
            failures += p.failures + r.failures
            unplaced += j.unplaced_boxes
            rewrites += sum(v.rewritten for v in j.candidate_verdicts + j.reference_verdicts)
        from boxmed_eval.judges.phi import is_known_public

        public = is_known_public(self.options.get("dataset"))
        result = MetricResult(per_sample=dict(per),
                              tables={"radfact_sentences": sentence_table(judged, reference_text=public)})
        valid_ids = [i for i, j in judged.items() if j.valid]
        corpus = {f"radfact_{n}": _nanmean([per[f"radfact_{n}"][i] for i in valid_ids]) for n in SCORE_NAMES}
        for kind in ("logical", "grounding", "spatial"):
            corpus[f"radfact_{kind}_f1"] = f1(corpus[f"radfact_{kind}_precision"], corpus[f"radfact_{kind}_recall"])
        corpus.update({"radfact_judge_failures": float(failures), "radfact_invalid_samples": float(invalid),
                       "radfact_unplaced_boxes": float(unplaced), "radfact_samples": float(len(valid_ids))})
        if not any(j.precision_side.boxed or j.recall_side.boxed for j in judged.values()):  # type: ignore[union-attr]
            # no box anywhere: the grounding and spatial numbers do not exist (not written as NaN)
            for name in [n for n in list(corpus) + list(result.per_sample) if n.startswith(("radfact_grounding",
                                                                                          "radfact_spatial"))]:
                corpus.pop(name, None)
                result.per_sample.pop(name, None)
            result.messages.append("radfact: no sentence has boxes; only the logical precision/recall are computed")
        result.corpus = corpus
        result.conventions = {"radfact_entailment": self.entailment, "radfact_mask_size": self.mask_size,
                              "radfact_sentences_reference_text": public,
                              "radfact_box_precision_threshold": self.threshold,
                              "radfact_failed_calls": self.failures}
        if self._judge is not None:
            result.conventions.update(self._judge.conventions())
            result.conventions["radfact_phrase_rewrites"] = rewrites
        if failures:
            result.messages.append(f"radfact: {failures} judge replies could not be parsed; scored as "
                                   + ("not entailed (RadFact's rule)" if self.failures == "not_entailed"
                                      else "excluded from the denominators (failures=exclude)"))
        if invalid:
            result.messages.append(f"radfact: {invalid} studies dropped (the judge cited evidence that is not a "
                                   "sentence of the other report), as RadFact drops them")
        if unplaced:
            result.messages.append(f"radfact: {unplaced} predicted boxes have no phrase matching a report sentence "
                                   "and were left out")
        return result


class RadFactJudge(JudgedMetric):
    """The LLM side of ``radfact``: options, availability and the cached call of the judged
    metrics, with RadFact's decoding (greedy, at most 1024 new tokens) and chat messages."""

    name = "radfact"
    default_repo = ""  # no default judge: RadFact uses an API model
    default_max_new_tokens = 1024
    prompt_format = "messages"

    def compute(self, *args: Any, **kwargs: Any) -> MetricResult:  # pragma: no cover - not a metric of its own
        raise MissingResourceError("RadFactJudge only judges for the radfact metric")
