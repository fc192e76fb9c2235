"""BERTScore (Zhang et al., ICLR 2020) on the ``bert-score`` package, in the two settings the
radiology-report literature uses; each has its own metric name (F1 per report, its mean as the
corpus value):

=====================  ===========================  =====  ========  ====  =========================
metric                 model                        layer  rescaled  idf   reference
=====================  ===========================  =====  ========  ====  =========================
``bertscore_cxr``      ``distilroberta-base``       5      yes       no    CXR-Report-Metric
                                                                           ``add_bertscore_col``
                                                                           (ReXrank; RadCliQ input)
``bertscore_radeval``  ``distilbert-base-uncased``  5      yes       no    RadEval ``BertScore``
=====================  ===========================  =====  ========  ====  =========================

Choose with ``bertscore.variant=cxr`` (default) or ``radeval``. ``bertscore.idf=true`` turns on
idf weights computed on the reference reports (CXR-Report-Metric's ``USE_IDF``; RadEval's RadCliQ
uses it); the metric name then gets ``_idf``. CXR-Report-Metric collapses runs of spaces in both
texts (``re.sub(' +', ' ', ...)``); the ``cxr`` variant does the same, RadEval passes texts as they are.

Weights are never downloaded: the model directory comes from ``bertscore.model=PATH``, else the
environment variable ``BOXMED_BERTSCORE_CXR_MODEL`` / ``BOXMED_BERTSCORE_RADEVAL_MODEL``, else the
Hugging Face cache (``local_files_only``). The directory's ``config.json`` must be of the variant's
architecture (``roberta`` / ``distilbert``) with at least 5 layers; anything else is refused, so a
``bertscore_cxr`` figure always comes from a distilroberta-shaped model. The baseline used for
rescaling is bert-score's own file for the official model name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study


@dataclass(frozen=True)
class BertScoreVariant:
    name: str
    model: str  # the official model name (bert-score's baseline file is named after it)
    hub_ids: tuple[str, ...]  # Hugging Face repositories holding it (looked up in the cache only)
    architecture: str  # config.json model_type the weights must have
    layer: int
    rescale: bool
    collapse_spaces: bool
    env: str
    reference: str


VARIANTS: dict[str, BertScoreVariant] = {
    "cxr": BertScoreVariant("cxr", "distilroberta-base", ("distilbert/distilroberta-base", "distilroberta-base"),
                            "roberta", 5, True, True, "BOXMED_BERTSCORE_CXR_MODEL",
                            "CXR-Report-Metric run_eval.add_bertscore_col (ReXrank)"),
    "radeval": BertScoreVariant("radeval", "distilbert-base-uncased",
                                ("distilbert/distilbert-base-uncased", "distilbert-base-uncased"),
                                "distilbert", 5, True, False, "BOXMED_BERTSCORE_RADEVAL_MODEL",
                                "RadEval radeval.metrics.bertscore.BertScore"),
}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def find_model_dir(variant: BertScoreVariant, model: str | os.PathLike[str] | None) -> Path:
    """The local directory of the variant's model: option, environment variable, HF cache."""
    given = model or os.environ.get(variant.env)
    if given:
        path = Path(given).expanduser()
        if not (path / "config.json").is_file():
            raise MissingResourceError(
                f"BERTScore model directory {path} has no config.json; pass a local {variant.model} directory "
                f"with bertscore.model=PATH (or set {variant.env})")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        snapshot_download = None
    if snapshot_download is not None:
        for repo in variant.hub_ids:
            try:
                found = Path(snapshot_download(repo_id=repo, local_files_only=True,
                                               cache_dir=os.environ.get("HF_HUB_CACHE")))
            except Exception:  # not in the cache: we never download
                continue
            if (found / "config.json").is_file():
                return found
    raise MissingResourceError(
        f"bertscore_{variant.name} needs the {variant.model} weights: pass --metric-option bertscore.model=PATH "
        f"(a local {variant.model} directory), set {variant.env}=PATH, or put {variant.hub_ids[0]} in the "
        "Hugging Face cache first (huggingface-cli download " + variant.hub_ids[0] + ")")


def check_architecture(variant: BertScoreVariant, path: Path) -> dict[str, Any]:
    """Refuse weights that are not of the variant's architecture: the metric name claims it."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BoxmedError(f"{path / 'config.json'}: cannot read ({exc})") from None
    kind = config.get("model_type")
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    if kind != variant.architecture or not isinstance(layers, int) or layers < variant.layer:
        raise BoxmedError(
            f"{path}: model_type {kind!r} with {layers} layers is not a {variant.model} model "
            f"(bertscore_{variant.name} needs model_type {variant.architecture!r}, >= {variant.layer} layers)\n"
            f"  fix: pass the {variant.model} directory, or choose the other variant (bertscore.variant=...)")
    return config


def baseline_file(variant: BertScoreVariant) -> Path:
    import bert_score

    path = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / f"{variant.model}.tsv"
    if not path.is_file():
        raise MissingResourceError(f"bert-score's baseline file {path} is missing; reinstall bert-score")
    return path


@METRICS.register("bertscore")
class BertScoreMetric(Metric):
    description = ("BERTScore F1 per report on the bert-score package: cxr (distilroberta-base layer 5, "
                   "rescaled: CXR-Report-Metric/ReXrank) or radeval (distilbert-base-uncased layer 5, rescaled)")
    needs = ("pip install bert-score (--no-deps) and local weights: bertscore.model=PATH, env "
             "BOXMED_BERTSCORE_CXR_MODEL / BOXMED_BERTSCORE_RADEVAL_MODEL, or the HF cache")
    provides = ("bertscore_cxr", "bertscore_radeval", "bertscore_cxr_idf", "bertscore_radeval_idf")
    default = False

    def __init__(self, variant: str = "cxr", model: str | None = None, idf: Any = False, batch_size: int = 64,
                 device: str | None = None, **options: Any) -> None:
        super().__init__(variant=variant, model=model, idf=idf, batch_size=batch_size, device=device, **options)
        if variant not in VARIANTS:
            raise BoxmedError(f"bertscore.variant={variant!r}: use one of {sorted(VARIANTS)}")
        self.variant = VARIANTS[variant]
        self.model_option = model
        self.idf = _truthy(idf)
        self.batch_size = max(1, int(batch_size))
        self.device = device

    @property
    def metric_name(self) -> str:
        return f"bertscore_{self.variant.name}" + ("_idf" if self.idf else "")

    def available(self) -> tuple[bool, str]:
        try:
            import bert_score  # noqa: F401
        except ImportError:
            return False, "the bert-score package is not installed: pip install bert-score --no-deps"
        try:
            find_model_dir(self.variant, self.model_option)
        except MissingResourceError as exc:
            return False, str(exc)
        return True, ""

    def prepare(self, text: str) -> str:
        return re.sub(r" +", " ", text) if self.variant.collapse_spaces else text

    def build_scorer(self, idf_sents: list[str]) -> Any:
        """bert-score's ``BERTScorer`` on the local weights (idf from ``idf_sents`` when on)."""
        import torch
        from bert_score import BERTScorer

        path = find_model_dir(self.variant, self.model_option)
        check_architecture(self.variant, path)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        scorer = BERTScorer(model_type=str(path), num_layers=self.variant.layer, batch_size=self.batch_size,
                            lang="en", rescale_with_baseline=self.variant.rescale,
                            baseline_path=str(baseline_file(self.variant)), device=device)
        if self.variant.architecture == "roberta":
            # bert-score encodes RoBERTa input with encode(..., add_prefix_space=True); transformers 5
            # ignores that per-call argument, so the first word would lose its leading-space token
            # and scores would differ from bert-score on transformers 3/4 (what CXR-Report-Metric
            # and ReXrank ran). A tokenizer built with add_prefix_space=True restores them.
            from transformers import AutoTokenizer

            scorer._tokenizer = AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)
        if self.idf:
            scorer._idf = True
            scorer.compute_idf(idf_sents)  # with the tokenizer above
        return scorer

    def score(self, references: list[str], hypotheses: list[str]) -> list[float]:
        """F1 per (reference, hypothesis) pair, as one bert-score call on the whole corpus."""
        refs = [self.prepare(r) for r in references]
        hyps = [self.prepare(h) for h in hypotheses]
        if not refs:
            return []
        scorer = self.build_scorer(refs)
        _, _, f1 = scorer.score(hyps, refs, batch_size=self.batch_size)
        return [float(v) for v in f1.tolist()]

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        scores = self.score([references[i] for i in ids], [hypotheses[i] for i in ids])
        result = MetricResult()
        name = self.metric_name
        result.per_sample[name] = dict(zip(ids, scores))
        result.corpus[name] = sum(scores) / len(scores) if scores else float("nan")
        v = self.variant
        result.conventions[name] = (f"bert-score F1: {v.model} layer {v.layer}, baseline rescaling "
                                    f"{'on' if v.rescale else 'off'}, idf {'on (reference reports)' if self.idf else 'off'}"
                                    f"{', runs of spaces collapsed' if v.collapse_spaces else ''}; as {v.reference}; "
                                    f"weights {find_model_dir(v, self.model_option)}")
        return result


__all__ = ["VARIANTS", "BertScoreMetric", "BertScoreVariant", "baseline_file", "check_architecture",
           "find_model_dir"]
