"""RaTEScore (Zhao et al., EMNLP 2024): entity-aware similarity of radiology reports, written
here from the ``RaTEScore`` package (0.6.0, identical to MAGIC-AI4Med/RaTEScore on GitHub); the
package itself cannot be used on this stack (it imports ``medspacy`` at import time, and medspacy
would downgrade numpy to 1.26 and install spaCy 3.7).

The pipeline, per report (``RaTEScore.compute_score``):

1. **Sentences**: medspacy's PyRuSH sentence splitter; each sentence stripped, dropped when it
   has no word or fewer than 3 characters.
2. **NER**: a token classifier (``Angelakeke/RaTE-NER-Deberta``) on each sentence (512 tokens at
   most); argmax label per token; entities from the B-/I-/O labels by the package's
   ``post_process`` rules, quirks included (:func:`group_entities`); a report's entities are those
   of its sentences in order, as (text, type) with the text ``convert_tokens_to_string`` of the
   entity's tokens.
3. **Embeddings**: the [CLS] last hidden state of an embedding model
   (``FremyCompany/BioLORD-2023-C``) on each entity text (30 tokens at most).
4. **Score** (:func:`directional_score`, :func:`ratescore_pair`): for each entity of one side, the
   most cosine-similar entity of the other side; its similarity weighted by the affinity matrix
   entry (this type, matched type), times ``neg_weight`` when the two types are a negation pair
   (e.g. DISEASE vs NON-DISEASE), summed and divided by the sum of the weights (0 if that is 0). The
   package's ``precision`` is the score from the reference's entities, ``recall`` from the
   generated ones; RaTEScore = their harmonic mean (0 when both are 0); **0.5** when either report
   has no entity.

Variants: ``ratescore.affinity=long`` (default; the package's ``DEFAULT_MATRIX_LONG``) or ``short``
(metric ``ratescore_short``). ``ratescore.sentences=medspacy`` (default, the package's splitter;
needs ``medspacy`` importable) or ``regex`` (boxmed-eval's splitter: after ``.``/``!``/``?``
followed by white space, and at line breaks; metric ``ratescore_regexsplit``, *not* equal to the
package, for a stack without medspacy).

One departure: a report with no sentence left (empty, or only tiny fragments) gets no entities,
hence 0.5; the package drops it from its list instead, which shifts every later report onto the
wrong partner (its ``zip`` of the two lists).

Weights are never downloaded: ``ratescore.model=DIR`` (the NER model; env
``BOXMED_RATESCORE_MODEL``), ``ratescore.embedding_model=DIR`` (env
``BOXMED_RATESCORE_EMBEDDING``), else the Hugging Face cache. Both are loaded with transformers'
``from_pretrained`` (safetensors, or ``weights_only`` for ``.bin``), and any missing or unexpected
weight is an error (except a missing pooler of the embedding model, which is never run).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

NER_HUB_ID = "Angelakeke/RaTE-NER-Deberta"
EMBEDDING_HUB_ID = "FremyCompany/BioLORD-2023-C"
NER_ENV = "BOXMED_RATESCORE_MODEL"
EMBEDDING_ENV = "BOXMED_RATESCORE_EMBEDDING"

# RaTEScore 0.6.0 scorer.py DEFAULT_MATRIX_LONG / DEFAULT_MATRIX_SHORT (numbers only; the
# package's type-pair weights fitted to radiologists' ratings, and the negation weight).
AFFINITY = {
    "long": {"abnormality_abnormality": 0.4276119164393705, "abnormality_anatomy": 0.6240929990607657,
             "abnormality_disease": 0.0034478181112993847, "abnormality_non-abnormality": 0.5431049700217344,
             "abnormality_non-disease": 0.27005425386213877, "anatomy_abnormality": 0.7487824274337533,
             "anatomy_anatomy": 0.2856134859160784, "anatomy_disease": 0.4592143222158069,
             "anatomy_non-abnormality": 0.02097055139911715, "anatomy_non-disease": 0.00013736314126696204,
             "disease_abnormality": 0.8396510075734789, "disease_anatomy": 0.9950209388542061,
             "disease_disease": 0.8460555030578727, "disease_non-abnormality": 0.9820689020512646,
             "disease_non-disease": 0.3789136708096537, "non-abnormality_abnormality": 0.16546764653692908,
             "non-abnormality_anatomy": 0.018670610691852826, "non-abnormality_disease": 0.719397354576018,
             "non-abnormality_non-abnormality": 0.0009357166071730684,
             "non-abnormality_non-disease": 0.0927333564267591, "non-disease_abnormality": 0.7759420231214385,
             "non-disease_anatomy": 0.1839139293714062, "non-disease_disease": 0.10073046076318157,
             "non-disease_non-abnormality": 0.03860183811876373, "non-disease_non-disease": 0.34065681486566446,
             "neg_weight": 0.8716553966489615},
    "short": {"abnormality_abnormality": 0.4070293318365468, "abnormality_anatomy": 0.6952639610605605,
              "abnormality_disease": 0.28342529466226446, "abnormality_non-abnormality": 0.9479148658006686,
              "abnormality_non-disease": 0.23875064111146294, "anatomy_abnormality": 0.5829759950441763,
              "anatomy_anatomy": 0.7709590751917746, "anatomy_disease": 0.0006059634829551632,
              "anatomy_non-abnormality": 0.794672584951181, "anatomy_non-disease": 0.27982942400798977,
              "disease_abnormality": 0.8840397619834857, "disease_anatomy": 0.9637659445696822,
              "disease_disease": 0.19018958438059513, "disease_non-abnormality": 0.6962283914800402,
              "disease_non-disease": 0.943727057946997, "non-abnormality_abnormality": 0.1712744286898638,
              "non-abnormality_anatomy": 0.4485149671497294, "non-abnormality_disease": 0.00045065329822896076,
              "non-abnormality_non-abnormality": 0.0007887930317199857,
              "non-abnormality_non-disease": 0.8555432840895761, "non-disease_abnormality": 0.9555801066212176,
              "non-disease_anatomy": 0.13122106162635216, "non-disease_disease": 0.6072996585919443,
              "non-disease_non-abnormality": 0.05650711141169969, "non-disease_non-disease": 0.3214769399791204,
              "neg_weight": 0.3611577852354489},
}
# type pairs (this side, matched side) whose similarity is scaled by neg_weight
NEGATION_PAIRS = frozenset({("NON-DISEASE", "DISEASE"), ("NON-ABNORMALITY", "ABNORMALITY"),
                            ("DISEASE", "NON-DISEASE"), ("ABNORMALITY", "NON-ABNORMALITY"),
                            ("NON-DISEASE", "ABNORMALITY"), ("NON-ABNORMALITY", "DISEASE"),
                            ("DISEASE", "NON-ABNORMALITY"), ("ABNORMALITY", "NON-DISEASE")})


def affinity_matrix(name: str) -> dict[tuple[str, str], float]:
    """``{(TYPE, TYPE): weight}`` with ``("NEG", "WEIGHT")`` the negation weight (the package's keys)."""
    if name not in AFFINITY:
        raise BoxmedError(f"ratescore.affinity={name!r}: use one of {', '.join(AFFINITY)}")
    return {(k.split("_")[0].upper(), k.split("_")[1].upper()): v for k, v in AFFINITY[name].items()}


# ------------------------------------------------------------------ sentences


def regex_sentences(text: str) -> list[str]:
    """boxmed-eval's splitter for the ``regex`` variant: after . ! ? + white space, and at line breaks."""
    return [p for p in re.split(r"(?<=[.!?])\s+|\n+", text)]


def keep_sentences(sentences: list[str]) -> list[str]:
    """The package's filter: stripped, at least one word and 3 characters."""
    kept = []
    for sentence in sentences:
        sentence = str(sentence).strip()
        if len(sentence.split()) == 0 or len(sentence) < 3:
            continue
        kept.append(sentence)
    return kept


def medspacy_splitter() -> Any:
    """The package's sentence splitter (medspacy with PyRuSH); raises ImportError without medspacy."""
    import medspacy

    nlp = medspacy.load(medspacy_enable=["medspacy_pyrush"])
    return lambda text: [str(s) for s in nlp(text).sents]


# ------------------------------------------------------------------ entities


def group_entities(tokens: list[str], labels: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) token spans from per-token B-/I-/O labels, by the package's
    ``post_process`` rules. ``tokens`` include [CLS]/[SEP]; ``labels`` may be longer (padding).

    Only transitions decide: a B- followed by I- opens an entity; a B- followed by B- or O is a
    one-token entity (B-B also re-opens at the same token and leaves ``end`` set); an I- followed
    by B- or O closes the open entity at this token (I-B then opens one at the I- token); I-
    followed by I- continues whatever type; the last token's label is never read as a start.
    An entity still open at the end is closed at the token before [SEP], unless ``end`` was left set.
    """
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    end: int | None = None
    kind: str | None = None
    for i, (token, label) in enumerate(zip(tokens, labels[:len(tokens)])):
        if token in ("[CLS]", "[SEP]") or label == "O" or i >= len(labels) - 1:
            continue
        nxt = labels[i + 1]
        if label.startswith("B-"):
            if nxt.startswith("I-"):
                start, kind = i, label[2:]
            elif nxt.startswith("B-"):
                spans.append((i, i, label[2:]))
                start, end, kind = i, i, label[2:]
            elif nxt.startswith("O"):
                spans.append((i, i, label[2:]))
                start = end = kind = None
        elif label.startswith("I-"):
            if nxt.startswith("B-"):
                end = i
                if start is not None:
                    spans.append((start, end, str(kind)))
                start, kind = i, label[2:]
            elif nxt.startswith("O"):
                end = i
                if start is not None:
                    spans.append((start, end, str(kind)))
                start = end = kind = None
    if start is not None and end is None:
        spans.append((start, len(tokens) - 2, str(kind)))
    return spans


# ------------------------------------------------------------------ scoring


def directional_score(embeds_a: Any, embeds_b: Any, types_a: list[str], types_b: list[str],
                      matrix: dict[tuple[str, str], float]) -> float:
    """The package's ``compute``: each entity of A matched to its most cosine-similar entity of B."""
    import torch

    a = torch.nn.functional.normalize(embeds_a, p=2, dim=1)
    b = torch.nn.functional.normalize(embeds_b, p=2, dim=1)
    sims = a @ b.T
    neg = matrix[("NEG", "WEIGHT")]
    total = weights = 0.0
    for i in range(sims.size(0)):
        j = int(torch.argmax(sims[i]))  # first of equal maxima
        pair = (types_a[i], types_b[j])
        weight = matrix[pair]
        total += float(sims[i, j]) * weight * (neg if pair in NEGATION_PAIRS else 1)
        weights += weight
    return total / weights if weights != 0 else 0.0


def ratescore_pair(reference: tuple[Any, list[str]], hypothesis: tuple[Any, list[str]],
                   matrix: dict[tuple[str, str], float]) -> float:
    """RaTEScore of one report pair from (entity embeddings, entity types) of each side."""
    (ref_embeds, ref_types), (hyp_embeds, hyp_types) = reference, hypothesis
    if len(ref_types) == 0 or len(hyp_types) == 0:
        return 0.5
    precision = directional_score(ref_embeds, hyp_embeds, ref_types, hyp_types, matrix)
    recall = directional_score(hyp_embeds, ref_embeds, hyp_types, ref_types, matrix)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------ models


def find_model(option: str | None, env: str, hub_id: str, what: str, flag: str) -> Path:
    given = option or os.environ.get(env)
    if given:
        path = Path(given).expanduser()
        if not (path / "config.json").is_file():
            raise MissingResourceError(f"RaTEScore {what} directory {path} has no config.json; pass "
                                       f"--metric-option ratescore.{flag}=DIR (a local {hub_id})")
        return path
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(repo_id=hub_id, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE")))
        if (found / "config.json").is_file():
            return found
    except Exception:  # not in the cache: never downloaded here
        pass
    raise MissingResourceError(f"ratescore needs its {what} {hub_id}: pass --metric-option ratescore.{flag}=DIR "
                               f"(or set {env}=DIR), or put {hub_id} in the Hugging Face cache; nothing is downloaded")


def load_strict(loader: Any, path: Path, what: str, unused_prefixes: tuple[str, ...] = ()) -> Any:
    """``from_pretrained`` offline, refusing missing / unexpected / mismatched weights, except
    missing ones under ``unused_prefixes`` (a pooler the metric never runs)."""
    try:
        model, info = loader.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
    except Exception as exc:
        raise BoxmedError(f"{path}: cannot load the RaTEScore {what} ({type(exc).__name__}: {exc})") from None
    info = dict(info)
    info["missing_keys"] = [k for k in info.get("missing_keys", []) if not k.startswith(unused_prefixes)]
    problems = {k: list(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise BoxmedError(f"{path}: weights do not match the {what}'s config.json: {problems}\n"
                          f"  fix: pass the original {what} directory")
    return model.eval()


@dataclass
class _Models:
    ner_tokenizer: Any
    ner: Any
    id2label: dict[int, str]
    embed_tokenizer: Any
    embedder: Any
    device: Any


@METRICS.register("ratescore")
class RaTEScoreMetric(Metric):
    description = ("RaTEScore (entity-aware report similarity; RaTEScore package 0.6.0 re-implemented): "
                   "long / short affinity matrix, medspacy or regex sentence splitting")
    needs = (f"torch, transformers, the NER model {NER_HUB_ID} (ratescore.model=DIR, env {NER_ENV}), the embedding "
             f"model {EMBEDDING_HUB_ID} (ratescore.embedding_model=DIR, env {EMBEDDING_ENV}) or the HF cache; "
             "medspacy for the default sentence splitting (else ratescore.sentences=regex: ratescore_regexsplit)")
    provides = ("ratescore", "ratescore_short", "ratescore_regexsplit", "ratescore_short_regexsplit")
    default = False

    def __init__(self, model: str | None = None, embedding_model: str | None = None, affinity: str = "long",
                 sentences: str = "medspacy", batch_size: int = 16, device: str | None = None,
                 **options: Any) -> None:
        super().__init__(model=model, embedding_model=embedding_model, affinity=affinity, sentences=sentences,
                         batch_size=batch_size, device=device, **options)
        self.matrix = affinity_matrix(affinity)
        if sentences not in ("medspacy", "regex"):
            raise BoxmedError(f"ratescore.sentences={sentences!r}: use medspacy (the package's) or regex")
        self.affinity, self.sentences = affinity, sentences
        self.model_option, self.embedding_option = model, embedding_model
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self._splitter: Any = None
        self._models: _Models | None = None

    @property
    def metric_name(self) -> str:
        return ("ratescore" + ("_short" if self.affinity == "short" else "")
                + ("_regexsplit" if self.sentences == "regex" else ""))

    def splitter(self) -> Any:
        if self._splitter is None:
            if self.sentences == "regex":
                self._splitter = regex_sentences
            else:
                try:
                    self._splitter = medspacy_splitter()
                except ImportError as exc:
                    raise MissingResourceError(
                        f"ratescore splits sentences with medspacy (PyRuSH), as the RaTEScore package does, and "
                        f"medspacy is not importable ({exc}); pip install medspacy (here it would downgrade numpy "
                        "to 1.26 and install spaCy 3.7), or pass --metric-option ratescore.sentences=regex for "
                        "boxmed-eval's splitter (metric ratescore_regexsplit, not equal to the package)") from None
        return self._splitter

    def available(self) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return False, f"needs torch and transformers ({exc})"
        try:
            find_model(self.model_option, NER_ENV, NER_HUB_ID, "NER model", "model")
            find_model(self.embedding_option, EMBEDDING_ENV, EMBEDDING_HUB_ID, "embedding model", "embedding_model")
            self.splitter()
        except MissingResourceError as exc:
            return False, str(exc)
        return True, ""

    def models(self) -> _Models:
        if self._models is None:
            import torch
            from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

            ner_path = find_model(self.model_option, NER_ENV, NER_HUB_ID, "NER model", "model")
            emb_path = find_model(self.embedding_option, EMBEDDING_ENV, EMBEDDING_HUB_ID, "embedding model",
                                  "embedding_model")
            device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            ner = load_strict(AutoModelForTokenClassification, ner_path, "NER model").to(device)
            # only last_hidden_state is used: a checkpoint without the pooler loads as the package's does
            embedder = load_strict(AutoModel, emb_path, "embedding model", ("pooler.",)).to(device)
            id2label = {int(k): v for k, v in ner.config.id2label.items()}
            self._models = _Models(AutoTokenizer.from_pretrained(str(ner_path), local_files_only=True), ner, id2label,
                                   AutoTokenizer.from_pretrained(str(emb_path), local_files_only=True), embedder,
                                   device)
        return self._models

    def entities(self, reports: list[str]) -> list[list[tuple[str, str]]]:
        """(entity text, type) per report: sentences, NER, the package's grouping."""
        import torch

        m = self.models()
        split = self.splitter()
        sentences: list[tuple[int, str]] = [(r, s) for r, text in enumerate(reports)
                                            for s in keep_sentences(split(text))]
        out: list[list[tuple[str, str]]] = [[] for _ in reports]
        with torch.inference_mode():
            for b in range(0, len(sentences), self.batch_size):
                batch = sentences[b:b + self.batch_size]
                enc = m.ner_tokenizer([s for _, s in batch], max_length=512, padding=True, truncation=True,
                                      return_tensors="pt").to(m.device)
                predicted = torch.argmax(m.ner(**enc).logits, dim=2).tolist()
                lengths = enc["attention_mask"].sum(dim=1).tolist()
                for row, (report, _) in enumerate(batch):
                    tokens = m.ner_tokenizer.convert_ids_to_tokens(enc["input_ids"][row][:lengths[row]].tolist())
                    labels = [m.id2label[k] for k in predicted[row]]
                    for start, end, kind in group_entities(tokens, labels):
                        out[report].append((m.ner_tokenizer.convert_tokens_to_string(tokens[start:end + 1]), kind))
        return out

    def embed(self, entities: list[tuple[str, str]]) -> tuple[Any, list[str]]:
        """[CLS] embeddings (float32, CPU) and types of one report's entities."""
        import torch

        m = self.models()
        if not entities:
            return torch.zeros(0, 1), []
        with torch.inference_mode():
            enc = m.embed_tokenizer([e for e, _ in entities], truncation=True, padding=True, return_tensors="pt",
                                    max_length=30).to(m.device)
            vectors = m.embedder(**enc).last_hidden_state[:, 0, :].float().cpu()
        return vectors, [t for _, t in entities]

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        texts = list(dict.fromkeys([references[i] for i in ids] + [hypotheses[i] for i in ids]))
        by_text = {t: self.embed(e) for t, e in zip(texts, self.entities(texts))}
        missing_types = {t for _, types in by_text.values() for t in types
                         if (t, t) not in self.matrix}
        if missing_types:
            raise BoxmedError(f"the NER model gives entity types {sorted(missing_types)} that RaTEScore's affinity "
                              "matrix has no weight for; pass the RaTE-NER model (ratescore.model=DIR)")
        scores = {i: ratescore_pair(by_text[references[i]], by_text[hypotheses[i]], self.matrix) for i in ids}
        result = MetricResult()
        result.per_sample[self.metric_name] = scores
        values = list(scores.values())
        result.corpus[self.metric_name] = sum(values) / len(values) if values else math.nan
        result.conventions["ratescore"] = {"affinity": self.affinity, "sentences": self.sentences,
                                           "reference": "RaTEScore 0.6.0 (re-implemented; see ratescore.py)"}
        return result


__all__ = ["AFFINITY", "RaTEScoreMetric", "affinity_matrix", "directional_score", "group_entities",
           "keep_sentences", "ratescore_pair", "regex_sentences"]
