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

Inference is boxmed-eval's own re-implementation of the package's DyGIE++ model
(``boxmed_eval.metrics.radgraph_model``; what it reproduces and where it may differ is listed
there), because the ``radgraph`` package (0.1.18) does not build its model on transformers 5: its
vendored allennlp tokenizer calls ``tokenizer.encode_plus``, which transformers 5 removed.

Weights are never downloaded. The model archive (the package's ``StanfordAIMI/RRG_scorers``
``radgraph.tar.gz`` / ``radgraph-xl.tar.gz`` / ``modern-radgraph-xl.tar.gz``) is found from
``radgraph.model=PATH`` (the ``.tar.gz`` or its extracted folder holding ``config.json``,
``weights.th`` and ``vocabulary/``), else env ``BOXMED_RADGRAPH_MODEL``, else
``radgraph.model_dir=DIR`` with ``DIR/<model_type>/`` extracted (the package's own cache layout), else
the package's cache (``~/.cache/radgraph/<version>/<model_type>``) or the Hugging Face cache of
``StanfordAIMI/RRG_scorers`` (a ``.tar.gz`` is extracted once into ``$BOXMED_CACHE/radgraph/``,
default ``~/.cache/boxmed_eval``). Its encoder (the transformers model named in ``config.json``,
whose config and tokenizer the archive does not hold) comes from ``radgraph.bert=DIR``, env
``BOXMED_RADGRAPH_BERT`` or the Hugging Face cache. ``weights.th`` is read with
``weights_only=True`` and every key must be the one the package's ``load_state_dict(strict=True)``
expects. ``radgraph.dataset=NAME`` picks the label namespaces ``NAME__ner_labels`` /
``NAME__relation_labels`` of the vocabulary (default: the model type, as the package sets it).
``radgraph.model_type``: ``radgraph`` (default: the model of CXR-Report-Metric's RadCliQ
and of RadEval's ``radgraph``), ``radgraph-xl`` (the package's default) or ``modern-radgraph-xl``.
The scoring functions below are boxmed-eval's own, written from the package's ``rewards.py`` and
CXR-Report-Metric's ``radgraph_evaluate_model.py`` and tested on hand-made annotations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

Annotation = dict[str, Any]  # {"entities": {id: {"tokens": str, "label": str, "relations": [[rel, id], ...]}}}

VARIANT_NAMES = ("simple", "partial", "complete", "combined")
MODEL_ENV = "BOXMED_RADGRAPH_MODEL"


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


HF_REPO_ID = "StanfordAIMI/RRG_scorers"
BERT_ENV = "BOXMED_RADGRAPH_BERT"
ARCHIVE_FILES = ("config.json", "weights.th", "vocabulary")


def _is_model_folder(path: Path) -> bool:
    return all((path / name).exists() for name in ARCHIVE_FILES)


def _package_cache_folders(model_type: str) -> list[Path]:
    """Where the radgraph package extracts its archives (appdirs ``user_cache_dir("radgraph")/<version>``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "radgraph"
    if not root.is_dir():
        return []
    return sorted((p / model_type for p in root.iterdir() if (p / model_type).is_dir()), reverse=True)


@METRICS.register("radgraph")
class RadGraphMetric(Metric):
    description = ("RadGraph F1: simple / partial / complete (radgraph package rewards) and "
                   "CXR-Report-Metric's radgraph_combined, on boxmed-eval's own DyGIE++ inference")
    needs = (f"torch, transformers and a RadGraph model archive ({HF_REPO_ID} radgraph.tar.gz or its extracted "
             f"folder: radgraph.model=PATH, env {MODEL_ENV}) plus its encoder's config and tokenizer "
             f"(radgraph.bert=DIR, env {BERT_ENV}, or the HF cache)")
    provides = tuple(f"radgraph_{v}" for v in VARIANT_NAMES)
    default = False

    def __init__(self, variant: str = "all", model: str | None = None, model_dir: str | None = None,
                 model_type: str = "radgraph", bert: str | None = None, device: str | None = None,
                 batch_size: int = 8, dataset: str | None = None, **options: Any) -> None:
        super().__init__(variant=variant, model=model, model_dir=model_dir, model_type=model_type, bert=bert,
                         device=device, batch_size=batch_size, dataset=dataset, **options)
        if variant != "all" and variant not in VARIANT_NAMES:
            raise BoxmedError(f"radgraph.variant={variant!r}: use one of {', '.join(VARIANT_NAMES)} or all")
        from boxmed_eval.metrics.radgraph_model import MODEL_TYPES

        if model_type not in MODEL_TYPES:
            raise BoxmedError(f"radgraph.model_type={model_type!r}: use one of {', '.join(MODEL_TYPES)}")
        self.variants = VARIANT_NAMES if variant == "all" else (variant,)
        self.model_option = model or os.environ.get(MODEL_ENV)
        self.model_dir = model_dir
        self.model_type = model_type
        self.bert_option = bert or os.environ.get(BERT_ENV)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.dataset = dataset
        self._folder: Path | None = None
        self._model: Any = None

    def _hint(self) -> str:
        return (f"pass --metric-option radgraph.model=PATH (the {HF_REPO_ID} {self.model_type}.tar.gz or the folder "
                f"it extracts to, holding config.json, weights.th and vocabulary/; or set {MODEL_ENV}=PATH); "
                "nothing is downloaded")

    def model_folder(self) -> Path:
        """The extracted archive folder (a ``.tar.gz`` is extracted once into ``$BOXMED_CACHE/radgraph``)."""
        if self._folder is not None:
            return self._folder
        from boxmed_eval.metrics.radgraph_model import extract_archive

        if self.model_option:
            path = Path(self.model_option).expanduser()
            if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
                self._folder = extract_archive(path)
                if not _is_model_folder(self._folder):
                    raise MissingResourceError(f"{path} does not hold config.json, weights.th and vocabulary/; "
                                               + self._hint())
                return self._folder
            if path.is_dir() and _is_model_folder(path):
                self._folder = path
                return path
            missing = [n for n in ARCHIVE_FILES if not (path / n).exists()] if path.is_dir() else ["the folder"]
            raise MissingResourceError(f"RadGraph model {path} lacks {', '.join(missing)}; " + self._hint())
        if self.model_dir:
            folder = Path(self.model_dir).expanduser() / self.model_type
            if not _is_model_folder(folder):
                missing = [n for n in ARCHIVE_FILES if not (folder / n).exists()]
                raise MissingResourceError(f"RadGraph model folder {folder} lacks {', '.join(missing)}; "
                                           + self._hint())
            self._folder = folder
            return folder
        for folder in _package_cache_folders(self.model_type):
            if _is_model_folder(folder):
                self._folder = folder
                return folder
        try:
            from huggingface_hub import hf_hub_download

            archive = Path(hf_hub_download(repo_id=HF_REPO_ID, filename=f"{self.model_type}.tar.gz",
                                           local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE")))
        except Exception:  # not in the cache: never downloaded here
            raise MissingResourceError(f"radgraph needs the RadGraph model ({self.model_type}): " + self._hint()) from None
        self._folder = extract_archive(archive)
        return self._folder

    def encoder_source(self) -> str:
        """A local directory with the encoder's config.json and tokenizer."""
        if self.bert_option:
            path = Path(self.bert_option).expanduser()
            if not (path / "config.json").is_file():
                raise MissingResourceError(f"radgraph encoder directory {path} has no config.json; pass "
                                           "--metric-option radgraph.bert=DIR (the encoder named in the archive's "
                                           "config.json, with its tokenizer)")
            return str(path)
        from boxmed_eval.metrics.radgraph_model import read_archive

        name = read_archive(self.model_folder(), self.model_type, self.dataset).encoder_name
        # Microsoft renamed PubMedBERT to BiomedBERT on the Hub: a cached copy may be under either name
        names = [name] + [name.replace(a, b) for a, b in (("PubMedBERT", "BiomedBERT"), ("BiomedBERT", "PubMedBERT"))
                          if a in name]
        for repo in names:
            try:
                from huggingface_hub import snapshot_download

                found = Path(snapshot_download(repo_id=repo, local_files_only=True,
                                               cache_dir=os.environ.get("HF_HUB_CACHE")))
                if (found / "config.json").is_file():
                    return str(found)
            except Exception:  # not in the cache
                continue
        raise MissingResourceError(
            f"radgraph needs the config and tokenizer of its encoder {name!r}: pass --metric-option radgraph.bert=DIR "
            f"(a local copy of {name}; or set {BERT_ENV}=DIR), or put it in the Hugging Face cache")

    def available(self) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return False, f"needs torch and transformers ({exc})"
        try:
            self.model_folder()
            self.encoder_source()
        except MissingResourceError as exc:
            return False, str(exc)
        return True, ""

    def annotate(self, reports: list[str]) -> list[Annotation]:
        """RadGraph annotations per report (the package's output format)."""
        if self._model is None:
            from boxmed_eval.metrics.radgraph_model import RadGraphInference

            self._model = RadGraphInference(self.model_folder(), self.model_type, self.encoder_source(),
                                            device=self.device, batch_size=self.batch_size, dataset=self.dataset)
        return self._model(reports) if reports else []

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
        result.conventions["radgraph"] = {
            "inference": "boxmed-eval DyGIE++ re-implementation (radgraph 0.1.18 model, see radgraph_model.py)",
            "model_type": self.model_type, "model": str(self.model_folder()), "variants": list(self.variants)}
        return result


__all__ = ["RadGraphMetric", "radgraph_scores", "set_f1", "simple_items", "partial_items", "complete_items",
           "relation_items"]
