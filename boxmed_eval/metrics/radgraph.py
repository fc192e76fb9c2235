"""RadGraph F1 (Jain et al. 2021; Delbrouck et al. 2022): entities and relations extracted by a
RadGraph model from the generated and the reference report, compared per report.

Variants (option ``radgraph.variant``; the metric name says which):

====================  ==========================================================================
``radgraph_simple``   ``radgraph`` package ``F1RadGraph(reward_level="simple")``: F1 over the sets
                      of (tokens, label) of all entities
``radgraph_partial``  ``reward_level="partial"``: (tokens, label) for entities without relations,
                      (tokens, label, True) for entities with one
``radgraph_complete`` ``reward_level="complete"``: (tokens, label) for entities without relations,
                      (lower tokens, label, relation, lower target tokens) per relation
``radgraph_combined`` CXR-Report-Metric's ``radgraph_combined`` (RadCliQ's input): the mean of the
                      entity F1 over (tokens, label) and the relation F1 over
                      ((tokens, label), (target tokens, target label), relation)
====================  ==========================================================================

``variant=all`` writes the four. An empty generated or reference report scores 0 in the
package's variants (``F1RadGraph``); CXR-Report-Metric's set F1 gives 0 as well (no matches).

Inference runs the ``radgraph`` package (``RadGraph(model_type=...)``) on a local, extracted
model archive: ``radgraph.model_dir=DIR`` (or env ``BOXMED_RADGRAPH_MODEL``) where ``DIR/<model_type>``
holds ``config.json``, ``weights.th`` and ``vocabulary/`` (the package's ``StanfordAIMI/RRG_scorers``
``radgraph.tar.gz`` / ``radgraph-xl.tar.gz`` extracted). The package downloads when that
folder is empty; here it is checked first and the Hub is set offline while it loads, so nothing is
downloaded. ``radgraph.model_type``: ``radgraph`` (default: the model of CXR-Report-Metric's RadCliQ
and of RadEval's ``radgraph``) or ``radgraph-xl`` (the package's default).

Status on this project's stack (transformers 5), checked 2026-12-02 with ``radgraph`` 0.1.18
installed ``--no-deps`` (plus ``dotmap appdirs jsonpickle nltk h5py requests``): it imports, but
building its model fails: its vendored allennlp ``PretrainedTransformerTokenizer`` calls
``tokenizer.encode_plus``, which transformers 5 removed (AttributeError, 4 call sites; found by
loading a tiny random checkpoint written in the package's archive layout). So on transformers >= 5
the family reports itself unavailable with that reason; on transformers 4 it runs the package
(that path was not run here). Making it run on transformers 5 needs either a radgraph release
that drops ``encode_plus`` or an own DyGIE inference loading ``weights.th`` strictly; neither is
done. The scoring functions below are boxmed-eval's own, written from the package's
``rewards.py`` and CXR-Report-Metric's ``radgraph_evaluate_model.py`` and tested on hand-made
annotations; they need no model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

Annotation = dict[str, Any]  # {"entities": {id: {"tokens": str, "label": str, "relations": [[rel, id], ...]}}}

VARIANT_NAMES = ("simple", "partial", "complete", "combined")
MODEL_ENV = "BOXMED_RADGRAPH_MODEL"
INSTALL_HINT = ("pip install --no-deps radgraph==0.1.18 dotmap appdirs jsonpickle nltk h5py requests "
                "(radgraph's own requirements would replace torch)")


def set_f1(reference: set, hypothesis: set) -> float:
    """F1 of two sets; 0 when either side is empty of matches (both packages' convention)."""
    tp = len(reference & hypothesis)
    precision = tp / len(hypothesis) if hypothesis else 0.0
    recall = tp / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _entities(annotation: Annotation) -> dict[str, dict[str, Any]]:
    return dict(annotation.get("entities", {}) or {})


def simple_items(annotation: Annotation) -> set:
    return {(e["tokens"], e["label"]) for e in _entities(annotation).values()}


def partial_items(annotation: Annotation) -> set:
    return {(e["tokens"], e["label"], True) if e.get("relations") else (e["tokens"], e["label"])
            for e in _entities(annotation).values()}


def complete_items(annotation: Annotation) -> set:
    entities = _entities(annotation)
    items: set = set()
    for e in entities.values():
        if not e.get("relations"):
            items.add((e["tokens"], e["label"]))
        for relation, target in e.get("relations", []):
            items.add((e["tokens"].lower(), e["label"], relation, entities[target]["tokens"].lower()))
    return items


def relation_items(annotation: Annotation) -> set:
    entities = _entities(annotation)
    return {((e["tokens"], e["label"]), (entities[target]["tokens"], entities[target]["label"]), relation)
            for e in entities.values() for relation, target in e.get("relations", [])}


def radgraph_scores(reference: Annotation, hypothesis: Annotation) -> dict[str, float]:
    """The four variants for one report pair (see the module docstring)."""
    return {
        "simple": set_f1(simple_items(reference), simple_items(hypothesis)),
        "partial": set_f1(partial_items(reference), partial_items(hypothesis)),
        "complete": set_f1(complete_items(reference), complete_items(hypothesis)),
        "combined": (set_f1(simple_items(reference), simple_items(hypothesis))
                     + set_f1(relation_items(reference), relation_items(hypothesis))) / 2,
    }


def transformers_blocker() -> str:
    """Why the radgraph package cannot build its model on the installed transformers ('' if it can)."""
    try:
        import transformers
    except ImportError:
        return "needs transformers 4 and the radgraph package"
    major = int(str(transformers.__version__).split(".")[0])
    if major >= 5:
        return (f"the radgraph package (0.1.18) cannot build its model on transformers {transformers.__version__}: "
                "its vendored allennlp tokenizer calls tokenizer.encode_plus, removed in transformers 5; "
                "needs an environment with transformers 4.x (pip install 'transformers<5' and " + INSTALL_HINT + ")")
    return ""


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@METRICS.register("radgraph")
class RadGraphMetric(Metric):
    description = ("RadGraph F1: simple / partial / complete (radgraph package rewards) and "
                   "CXR-Report-Metric's radgraph_combined")
    needs = (f"the radgraph package ({INSTALL_HINT}) and an extracted RadGraph model: "
             f"radgraph.model_dir=DIR or env {MODEL_ENV}")
    provides = tuple(f"radgraph_{v}" for v in VARIANT_NAMES)
    default = False

    def __init__(self, variant: str = "all", model_dir: str | None = None, model_type: str = "radgraph",
                 **options: Any) -> None:
        super().__init__(variant=variant, model_dir=model_dir, model_type=model_type, **options)
        if variant != "all" and variant not in VARIANT_NAMES:
            raise BoxmedError(f"radgraph.variant={variant!r}: use one of {', '.join(VARIANT_NAMES)} or all")
        self.variants = VARIANT_NAMES if variant == "all" else (variant,)
        self.model_dir = model_dir or os.environ.get(MODEL_ENV)
        self.model_type = model_type
        self._model: Any = None

    def _model_folder(self) -> Path:
        if not self.model_dir:
            raise MissingResourceError(
                f"radgraph needs an extracted RadGraph model: pass --metric-option radgraph.model_dir=DIR "
                f"(or set {MODEL_ENV}=DIR), DIR/{self.model_type}/ holding config.json, weights.th and "
                f"vocabulary/ (StanfordAIMI/RRG_scorers {self.model_type}.tar.gz extracted); nothing is downloaded")
        folder = Path(self.model_dir).expanduser() / self.model_type
        missing = [n for n in ("config.json", "weights.th", "vocabulary") if not (folder / n).exists()]
        if missing:
            raise MissingResourceError(f"RadGraph model folder {folder} lacks {', '.join(missing)}; pass "
                                       "radgraph.model_dir=DIR with DIR/<model_type>/ the extracted archive")
        return folder

    def available(self) -> tuple[bool, str]:
        blocked = transformers_blocker()
        if blocked:
            return False, blocked
        try:
            self._model_folder()
        except MissingResourceError as exc:
            return False, str(exc)
        try:
            import radgraph  # noqa: F401
        except Exception as exc:  # missing, or broken on this stack: say which
            return False, f"the radgraph package cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        return True, ""

    def annotate(self, reports: list[str]) -> list[Annotation]:
        """RadGraph annotations per report, from the radgraph package's model."""
        if self._model is None:
            from radgraph import RadGraph

            folder = self._model_folder()
            with _hub_offline():
                self._model = RadGraph(model_type=self.model_type, model_cache_dir=str(folder.parent))
        out = self._model(["None" if not r else r for r in reports]) if reports else {}
        return [out.get(str(i), {"entities": {}}) for i in range(len(reports))]

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        texts = list(dict.fromkeys([references[i] for i in ids] + [hypotheses[i] for i in ids]))
        by_text = dict(zip(texts, self.annotate(texts)))
        result = MetricResult()
        for variant in self.variants:
            result.per_sample[f"radgraph_{variant}"] = {}
        for i in ids:
            empty = not references[i] or not hypotheses[i]  # F1RadGraph scores empty reports 0
            scores = radgraph_scores(by_text[references[i]], by_text[hypotheses[i]])
            for variant in self.variants:
                result.per_sample[f"radgraph_{variant}"][i] = 0.0 if empty else scores[variant]
        for name, values in result.per_sample.items():
            result.corpus[name] = sum(values.values()) / len(values) if values else float("nan")
        result.conventions["radgraph"] = (f"radgraph package model {self.model_type} from {self._model_folder()}; "
                                          f"variants {', '.join(self.variants)}")
        return result


__all__ = ["RadGraphMetric", "radgraph_scores", "set_f1", "simple_items", "partial_items", "complete_items",
           "relation_items"]
