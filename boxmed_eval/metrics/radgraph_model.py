"""boxmed-eval's own RadGraph inference: the DyGIE++ model of the ``radgraph`` package (0.1.18),
re-written on plain torch + transformers so that it runs on transformers 5, loading the
package's published archive (``config.json``, ``weights.th``, ``vocabulary/``) strictly.

What it reproduces (learned from the package's ``radgraph.py``, ``utils.py`` and its vendored
``dygie`` / ``allennlp`` modules; no code of theirs is used):

* **Word splitting** (``preprocess_reports``): model ``radgraph`` puts a space before and after
  each of ``/ , : . ! ? ( )`` and splits on whitespace (the package's character class
  ``[/,-,:,.,!?()]`` holds exactly these: ``,-,`` is the range from ``,`` to ``,``, so a hyphen is
  *not* split off); every other model (``radgraph-xl``, ``modern-radgraph-xl``; the package's
  ``elif model_type == "radgraph-xl" or "modern-radgraph-xl"`` is always true) uses nltk's
  ``wordpunct_tokenize`` (``\\w+|[^\\w\\s]+``) after its escape replacements, then splits
  ``).``, ``%.``, ``.'``, ``%,``, ``%)``. A whole report is one DyGIE "sentence"; an empty
  report is replaced by the text ``None`` (``RadGraph.forward``). A report of white space only
  has no words and gets no entities here (the package builds a sentence of no tokens from it).
* **Word pieces** (allennlp ``PretrainedTransformerMismatchedIndexer``): each word is tokenized
  on its own without special tokens; ``/.`` and ``/?`` are read as ``.`` / ``?``
  (``DyGIEReader._normalize_word``); a word's vector is the mean of its pieces' last-layer
  states, zero when it has none. Longer than ``max_length`` (512) with the special tokens, the
  pieces are cut into chunks of ``max_length - 2`` each wrapped in ``[CLS] ... [SEP]`` and encoded
  separately (allennlp's folding).
* **Spans**: every span of at most ``max_span_width`` words, ordered by start then end; span
  vector = [first word; last word; width embedding(end - start)] (``EndpointSpanExtractor``,
  ``x,y``, no bucketing).
* **NER**: feed-forward (``num_layers`` x Linear+ReLU) then Linear to ``n_labels - 1`` scores; a
  0 score for the null label is put in front; argmax; spans whose label is not null are entities
  (overlapping spans allowed, as in DyGIE).
* **Relations**: a mention scorer (feed-forward + Linear to 1) ranks the spans; the top
  ``ceil(n_words * spans_per_word)`` (at least 1) are kept, in their original order; for every
  ordered pair (i, j) of kept spans, *including i == j*, the pair vector [e_i; e_j; e_i * e_j] goes
  through a feed-forward and a Linear to one score per relation label, the two mention scores are
  added, a 0 null score is put in front, and the argmax, if not null, is a relation.
* **Output** (``postprocess_reports`` / ``get_entity``): entities numbered from "1" in NER order,
  ``tokens`` = the words joined by spaces, ``label``, ``start_ix``, ``end_ix``, ``relations`` =
  ``[label, target id]`` for each relation whose first span is this entity and whose second span is
  an entity (others are dropped); plus ``text``, ``data_source`` (None) and ``data_split``.

Differences, on purpose and small: several reports are encoded per batch (padding changes BERT's
outputs only at float rounding, ~1e-6; ``batch_size=1`` is the package's own one-at-a-time
order); ties in an argmax/top-k go to the lower index here, where torch's choice is unspecified.
The coreference weights in ``weights.th`` are checked and not used: the published configs have
coref loss weight 0 and ``coref_prop`` 0, so the package does not use them either (a config that
would use them is refused). Not compared with the package on its real checkpoint: the package does
not build its model on transformers 5, and the checkpoints are not on this machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, DataError, MissingResourceError

MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")
ENCODER_PREFIX = "_embedder.token_embedder_bert._matched_embedder.transformer_model."
WIDTH_KEY = "_endpoint_span_extractor._span_width_embedding.weight"
# buffers that transformers < 4.31 saved with the weights and later versions do not (index tables)
_OPTIONAL_ENCODER_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
NON_PADDED_DEFAULT = ("*tags", "*labels")

# ------------------------------------------------------------------ word splitting

_RADGRAPH_PUNCT = "/,:.!?()"
_RADGRAPH_SPLIT = re.compile(rf"(?<! )(?=[{re.escape(_RADGRAPH_PUNCT)}])|(?<=[{re.escape(_RADGRAPH_PUNCT)}])(?! )")
_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")  # nltk.tokenize.wordpunct_tokenize's pattern


def split_words(report: str, model_type: str) -> list[str]:
    """The words the model sees (the package's ``preprocess_reports`` for ``model_type``)."""
    if model_type == "radgraph":
        return _RADGRAPH_SPLIT.sub(" ", report).split()
    text = report.replace("\\n", "  ").replace("\\f", "  ").replace("\\u2122", "      ")
    text = text.replace("\n", " ").replace('\\"', "``")
    text = " ".join(_WORDPUNCT.findall(re.sub(r"\s+", " ", text)))
    for joined, spaced in ((").", ") ."), ("%.", "% ."), (".'", ". '"), ("%,", "% ,"), ("%)", "% )")):
        text = text.replace(joined, spaced)
    return text.split()


def enumerate_spans(n_words: int, max_width: int) -> list[tuple[int, int]]:
    """All (start, end) inclusive spans of at most ``max_width`` words, by start then end."""
    return [(s, e) for s in range(n_words) for e in range(s, min(s + max_width, n_words))]


# ------------------------------------------------------------------ archive reading


@dataclass
class RadGraphArchive:
    """What the model needs from an extracted archive (``config.json``, ``weights.th``, ``vocabulary/``)."""

    folder: Path
    model_type: str
    encoder_name: str
    max_length: int | None
    max_span_width: int
    feature_size: int
    ffnn_layers: int
    ffnn_hidden: int
    spans_per_word: float
    namespaces: dict[str, list[str]] = field(default_factory=dict)  # vocabulary namespace -> tokens by index
    dataset: str = ""  # the DyGIE "dataset" of the documents: names the label namespaces (default: model_type)

    @property
    def ner_namespace(self) -> str:
        return f"{self.dataset or self.model_type}__ner_labels"

    @property
    def relation_namespace(self) -> str:
        return f"{self.dataset or self.model_type}__relation_labels"

    @property
    def ner_labels(self) -> list[str]:
        return self.namespaces[self.ner_namespace]

    @property
    def relation_labels(self) -> list[str]:
        return self.namespaces[self.relation_namespace]


def _namespace_match(pattern: str, namespace: str) -> bool:
    # allennlp: "*labels" matches every namespace ending in "labels"; else exact
    return namespace.endswith(pattern[1:]) if pattern.startswith("*") else namespace == pattern


def read_vocabulary(folder: Path) -> dict[str, list[str]]:
    """allennlp ``Vocabulary.from_files``: one file per namespace, a token a line; padded namespaces
    (not matching ``non_padded_namespaces.txt``) get ``@@PADDING@@`` at index 0."""
    padding_file = folder / "non_padded_namespaces.txt"
    if not padding_file.is_file():
        raise DataError("the RadGraph vocabulary has no non_padded_namespaces.txt", file=folder,
                        fix="pass the extracted archive folder unchanged (vocabulary/ as in the .tar.gz)")
    patterns = [line.strip() for line in padding_file.read_text(encoding="utf-8").splitlines()]
    namespaces: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.name == padding_file.name or path.name.startswith("."):
            continue
        name = path.name.replace(".txt", "")
        lines = re.split(r"\n|\r\n", path.read_text(encoding="utf-8"))
        if lines and lines[-1] == "":
            lines = lines[:-1]
        tokens = [line.replace("@@NEWLINE@@", "\n") for line in lines]
        padded = not any(_namespace_match(p, name) for p in patterns if p)
        namespaces[name] = (["@@PADDING@@"] + tokens) if padded else tokens
    return namespaces


def _require(config: dict[str, Any], path: str, file: Path) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"config.json lacks {path}", file=file,
                            fix="pass the config.json of the radgraph package's model archive")
        node = node[part]
    return node


def read_archive(folder: str | os.PathLike[str], model_type: str, dataset: str | None = None) -> RadGraphArchive:
    """Read ``config.json`` and ``vocabulary/`` of an extracted RadGraph archive and check that this
    inference supports them (NER + relation heads only, as in the published models). ``dataset``:
    the document "dataset" whose label namespaces are used; the package sets it to ``model_type``."""
    folder = Path(folder)
    if model_type not in MODEL_TYPES:
        raise BoxmedError(f"radgraph.model_type={model_type!r}: use one of {', '.join(MODEL_TYPES)}")
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read ({exc})", file=config_file) from None
    model = _require(config, "model", config_file)
    loss = _require(config, "model.loss_weights", config_file)
    coref = model.get("modules", {}).get("coref", {}) or {}
    if float(loss.get("coref", 0)) > 0 or float(loss.get("events", 0)) > 0 or int(coref.get("coref_prop", 0) or 0) > 0:
        raise DataError("the model uses coreference or event heads (loss_weights / coref_prop > 0); boxmed-eval's "
                        "RadGraph inference has the NER and relation heads only", file=config_file)
    if float(loss.get("ner", 0)) <= 0 or float(loss.get("relation", 0)) <= 0:
        raise DataError("the model has no NER or no relation head (loss weight 0)", file=config_file)
    embedder = _require(config, "model.embedder.token_embedders.bert", config_file)
    ffnn = _require(config, "model.feedforward_params", config_file)
    hidden = ffnn["hidden_dims"]
    if isinstance(hidden, list):
        if len(set(hidden)) != 1:
            raise DataError(f"feedforward hidden_dims {hidden} differ per layer; not supported", file=config_file)
        hidden = hidden[0]
    reader_width = config.get("dataset_reader", {}).get("max_span_width", model["max_span_width"])
    if int(reader_width) != int(model["max_span_width"]):
        raise DataError(f"dataset_reader.max_span_width {reader_width} differs from model.max_span_width "
                        f"{model['max_span_width']}", file=config_file)
    archive = RadGraphArchive(
        folder=folder, model_type=model_type, encoder_name=str(embedder["model_name"]),
        max_length=int(embedder["max_length"]) if embedder.get("max_length") else None,
        max_span_width=int(model["max_span_width"]), feature_size=int(model["feature_size"]),
        ffnn_layers=int(ffnn["num_layers"]), ffnn_hidden=int(hidden),
        spans_per_word=float(_require(config, "model.modules.relation.spans_per_word", config_file)),
        namespaces=read_vocabulary(folder / "vocabulary"), dataset=dataset or model_type)
    names = archive.namespaces
    for needed in (archive.ner_namespace, archive.relation_namespace):
        if needed not in names:
            raise DataError(f"vocabulary has no namespace {needed!r} (has {sorted(names)})", file=folder / "vocabulary",
                            fix=f"pass radgraph.model_type= the type this archive was trained as (one of "
                                f"{', '.join(MODEL_TYPES)}), or radgraph.dataset=NAME for namespaces NAME__ner_labels")
    if any("trigger_labels" in n or "argument_labels" in n for n in names):
        raise DataError("vocabulary has event namespaces; not supported", file=folder / "vocabulary")
    if not archive.ner_labels or archive.ner_labels[0] != "":
        raise DataError(f"namespace {archive.ner_namespace} must start with the null label '' (an empty first line)",
                        file=folder / "vocabulary" / f"{archive.ner_namespace}.txt")
    return archive


# ------------------------------------------------------------------ the model


def _ffnn(torch: Any, input_dim: int, hidden: int, layers: int) -> Any:
    dims = [input_dim] + [hidden] * layers
    return torch.nn.ModuleList([torch.nn.Linear(dims[i], dims[i + 1]) for i in range(layers)])


def reference_key_map(archive: RadGraphArchive, encoder_keys: list[str]) -> tuple[dict[str, str], set[str]]:
    """``weights.th`` key -> this module's key, and the reference keys that are checked but unused
    (coreference heads; NER/relation heads of other vocabulary namespaces)."""
    mapping = {ENCODER_PREFIX + k: "encoder." + k for k in encoder_keys}
    mapping[WIDTH_KEY] = "width_embedding.weight"
    unused: set[str] = set()
    layers = range(archive.ffnn_layers)
    for ns in [n for n in archive.namespaces if "ner_labels" in n]:
        keys = {f"_ner._ner_scorers.{ns}.0._module._linear_layers.{i}.{p}": f"ner_ffnn.{i}.{p}"
                for i in layers for p in ("weight", "bias")}
        keys.update({f"_ner._ner_scorers.{ns}.1._module.{p}": f"ner_out.{p}" for p in ("weight", "bias")})
        if ns == archive.ner_namespace:
            mapping.update(keys)
        else:
            unused.update(keys)
    for ns in [n for n in archive.namespaces if "relation_labels" in n]:
        keys = {f"_relation._mention_pruners.{ns}._scorer.0._module._linear_layers.{i}.{p}": f"prune_ffnn.{i}.{p}"
                for i in layers for p in ("weight", "bias")}
        keys.update({f"_relation._mention_pruners.{ns}._scorer.1._module.{p}": f"prune_out.{p}"
                     for p in ("weight", "bias")})
        keys.update({f"_relation._relation_feedforwards.{ns}._linear_layers.{i}.{p}": f"rel_ffnn.{i}.{p}"
                     for i in layers for p in ("weight", "bias")})
        keys.update({f"_relation._relation_scorers.{ns}.{p}": f"rel_out.{p}" for p in ("weight", "bias")})
        if ns == archive.relation_namespace:
            mapping.update(keys)
        else:
            unused.update(keys)
    # DyGIE always builds its coreference module (loss weight 0: never run); its weights are saved
    for p in ("weight", "bias"):
        unused.update({f"_coref._antecedent_feedforward._module._linear_layers.{i}.{p}" for i in layers})
        unused.update({f"_coref._mention_pruner._scorer.0._module._linear_layers.{i}.{p}" for i in layers})
        unused.update({f"_coref._mention_pruner._scorer.1._module.{p}", f"_coref._antecedent_scorer._module.{p}",
                       f"_coref._f_network._linear_layers.0.{p}"})
    unused.add("_coref._distance_embedding.weight")
    return mapping, unused


def load_weights(archive: RadGraphArchive, model: Any) -> None:
    """Load ``weights.th`` (``weights_only=True``) into ``model``, every key accounted for."""
    import torch

    path = archive.folder / "weights.th"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused unpickling / corrupt file: say which file
        raise BoxmedError(f"{path}: cannot load the RadGraph weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError("not a state dict (expected {name: tensor})", file=path)
    encoder_keys = list(model.encoder.state_dict())
    mapping, unused = reference_key_map(archive, encoder_keys)
    optional = {ENCODER_PREFIX + k for k in _OPTIONAL_ENCODER_BUFFERS} - set(mapping)
    missing = sorted((set(mapping) | unused) - set(state))
    unexpected = sorted(set(state) - set(mapping) - unused - optional)
    if missing or unexpected:
        raise DataError(
            f"weights do not match the RadGraph ({archive.model_type}) architecture of config.json / vocabulary/: "
            f"missing {len(missing)}: {missing[:8]}; unexpected {len(unexpected)}: {unexpected[:8]}", file=path,
            fix="pass the weights.th of the same archive as config.json and vocabulary/ (and the encoder "
                f"{archive.encoder_name!r} it was trained on, radgraph.bert=DIR)")
    ours = {mapping[k]: v for k, v in state.items() if k in mapping}
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as exc:  # shapes: wrong encoder config, or another label set
        raise DataError(f"weights do not fit the model built from config.json / vocabulary/ / the encoder config: {exc}",
                        file=path, fix="pass the encoder directory the archive was trained on (radgraph.bert=DIR)") from None


def build_model(archive: RadGraphArchive, encoder_config: Any) -> Any:
    """The DyGIE NER + relation model (random weights; ``load_weights`` fills them)."""
    import torch
    from transformers import AutoModel

    class DygieModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_config(encoder_config)
            dim = int(encoder_config.hidden_size)
            span_dim = 2 * dim + archive.feature_size
            h, n = archive.ffnn_hidden, archive.ffnn_layers
            self.width_embedding = torch.nn.Embedding(archive.max_span_width, archive.feature_size)
            self.ner_ffnn = _ffnn(torch, span_dim, h, n)
            self.ner_out = torch.nn.Linear(h, len(archive.ner_labels) - 1)
            self.prune_ffnn = _ffnn(torch, span_dim, h, n)
            self.prune_out = torch.nn.Linear(h, 1)
            self.rel_ffnn = _ffnn(torch, 3 * span_dim, h, n)
            self.rel_out = torch.nn.Linear(h, len(archive.relation_labels))

        @staticmethod
        def run_ffnn(layers: Any, x: Any) -> Any:
            for layer in layers:  # allennlp FeedForward: ReLU after every layer (dropout off in eval)
                x = torch.relu(layer(x))
            return x

    return DygieModel()


def decode_ner(scores: Any, spans: list[tuple[int, int]], labels: list[str]) -> list[list[Any]]:
    """``scores``: (n_spans, n_labels - 1) logits. Returns ``[start, end, label, raw, softmax]`` for
    each span whose argmax over [0 (null), scores] is not the null label, in span order."""
    import torch

    full = torch.cat([scores.new_zeros(scores.size(0), 1), scores], dim=-1)
    raw, index = full.max(dim=-1)
    soft = torch.softmax(full, dim=-1).max(dim=-1).values
    return [[spans[i][0], spans[i][1], labels[int(index[i])], round(float(raw[i]), 4), round(float(soft[i]), 4)]
            for i in range(len(spans)) if int(index[i]) != 0]


def prune(mention_scores: Any, n_words: int, spans_per_word: float) -> list[int]:
    """Indices (ascending) of the ``ceil(n_words * spans_per_word)`` (at least 1) best-scoring spans."""
    import torch

    keep = min(max(math.ceil(n_words * spans_per_word), 1), mention_scores.numel())
    # stable sort: a tie goes to the lower index
    order = torch.sort(mention_scores.view(-1), descending=True, stable=True).indices[:keep]
    return sorted(int(i) for i in order)


def decode_relations(scores: Any, kept_spans: list[tuple[int, int]], labels: list[str]) -> list[list[Any]]:
    """``scores``: (k, k, n_relation_labels) logits incl. the mention scores. Returns
    ``[s1, e1, s2, e2, label, raw, softmax]`` for each ordered pair (i, j) whose argmax over
    [0 (null), scores] is a relation, row by row."""
    import torch

    full = torch.cat([scores.new_zeros(*scores.shape[:2], 1), scores], dim=-1)
    raw, index = full.max(dim=-1)
    soft = torch.softmax(full, dim=-1).max(dim=-1).values
    out = []
    for i, j in (index > 0).nonzero(as_tuple=False).tolist():
        (s1, e1), (s2, e2) = kept_spans[i], kept_spans[j]
        out.append([s1, e1, s2, e2, labels[int(index[i, j]) - 1], round(float(raw[i, j]), 4),
                    round(float(soft[i, j]), 4)])
    return out


def to_annotation(words: list[str], ner: list[list[Any]], relations: list[list[Any]]) -> dict[str, Any]:
    """The package's ``postprocess_reports`` record for one report."""
    spans = [[n[0], n[1]] for n in ner]
    entities: dict[str, dict[str, Any]] = {}
    for idx, (start, end, label, *_) in enumerate(ner):
        rels = []
        for r in relations:
            if [r[0], r[1]] == [start, end] and [r[2], r[3]] in spans:
                rels.append([r[4], str(spans.index([r[2], r[3]]) + 1)])
        entities[str(idx + 1)] = {"tokens": " ".join(words[start:end + 1]), "label": label, "start_ix": start,
                                  "end_ix": end, "relations": rels}
    return {"text": " ".join(words), "entities": entities, "data_source": None, "data_split": "inference"}


class RadGraphInference:
    """Annotates reports with a RadGraph archive: ``RadGraphInference(folder, model_type, encoder_dir)(reports)``."""

    def __init__(self, folder: str | os.PathLike[str], model_type: str, encoder: str | os.PathLike[str],
                 device: str | None = None, batch_size: int = 8, dataset: str | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.archive = read_archive(folder, model_type, dataset)
        try:
            encoder_config = AutoConfig.from_pretrained(str(encoder), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(encoder), local_files_only=True)
        except Exception as exc:
            raise MissingResourceError(
                f"cannot load the encoder config/tokenizer {self.archive.encoder_name!r} from {encoder} offline "
                f"({type(exc).__name__}: {exc}); pass --metric-option radgraph.bert=DIR (a local copy of "
                f"{self.archive.encoder_name})") from None
        self.model = build_model(self.archive, encoder_config)
        load_weights(self.archive, self.model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        at = next((i for i in range(len(with_special)) if with_special[i:i + len(bare)] == bare), None)
        if at is None:
            raise BoxmedError(f"cannot find where the tokenizer of {encoder} puts its special tokens")
        self._start, self._end = with_special[:at], with_special[at + len(bare):]
        limit = self.archive.max_length
        self._chunk = (limit - len(self._start) - len(self._end)) if limit else None

    def _pieces(self, words: list[str]) -> tuple[list[int], list[tuple[int, int] | None]]:
        pieces: list[int] = []
        offsets: list[tuple[int, int] | None] = []
        normal = [w[1:] if w in ("/.", "/?") else w for w in words]  # DyGIEReader._normalize_word
        # each word on its own (a batch of one-word texts), as allennlp's intra_word_tokenize
        for ids in (self.tokenizer(normal, add_special_tokens=False)["input_ids"] if normal else []):
            offsets.append((len(pieces), len(pieces) + len(ids) - 1) if ids else None)
            pieces.extend(ids)
        return pieces, offsets

    def _word_vectors(self, docs: list[list[str]]) -> list[Any]:
        """Last-layer word vectors (n_words x hidden) per document, encoder batched."""
        import torch

        encoded = [self._pieces(words) for words in docs]
        segments: list[tuple[int, list[int]]] = []  # (doc index, piece ids of the chunk)
        for d, (pieces, _) in enumerate(encoded):
            size = self._chunk if self._chunk and len(pieces) > self._chunk else max(len(pieces), 1)
            for s in range(0, max(len(pieces), 1), size):
                segments.append((d, pieces[s:s + size]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        outputs: dict[int, list[Any]] = {d: [] for d in range(len(docs))}
        order = sorted(range(len(segments)), key=lambda k: -len(segments[k][1]))
        for b in range(0, len(order), self.batch_size):
            batch = [segments[k] for k in order[b:b + self.batch_size]]
            rows = [self._start + ids + self._end for _, ids in batch]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
            hidden = self.model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            for row, k in enumerate(order[b:b + self.batch_size]):
                n = len(segments[k][1])
                outputs[segments[k][0]].append((k, hidden[row, len(self._start):len(self._start) + n]))
        vectors = []
        for d, (_, offsets) in enumerate(encoded):
            parts = [h for _, h in sorted(outputs[d], key=lambda item: item[0])]
            states = torch.cat(parts, dim=0)
            words = torch.zeros(len(offsets), states.size(-1), device=self.device, dtype=states.dtype)
            for w, off in enumerate(offsets):
                if off is not None:
                    words[w] = states[off[0]:off[1] + 1].mean(dim=0)
            vectors.append(words)
        return vectors

    def _heads(self, words: list[str], vectors: Any) -> tuple[list[list[Any]], list[list[Any]]]:
        import torch

        model, archive = self.model, self.archive
        spans = enumerate_spans(len(words), archive.max_span_width)
        if not spans:
            return [], []
        starts = torch.tensor([s for s, _ in spans], device=self.device)
        ends = torch.tensor([e for _, e in spans], device=self.device)
        span_emb = torch.cat([vectors[starts], vectors[ends], model.width_embedding(ends - starts)], dim=-1)
        ner = decode_ner(model.ner_out(model.run_ffnn(model.ner_ffnn, span_emb)).float().cpu(), spans,
                         archive.ner_labels)
        mention = model.prune_out(model.run_ffnn(model.prune_ffnn, span_emb)).view(-1)
        kept = prune(mention.float().cpu(), len(words), archive.spans_per_word)
        index = torch.tensor(kept, device=self.device)
        top, top_scores = span_emb[index], mention[index]
        k = len(kept)
        pairs = torch.cat([top.unsqueeze(1).expand(k, k, -1), top.unsqueeze(0).expand(k, k, -1),
                           top.unsqueeze(1) * top.unsqueeze(0)], dim=-1)
        scores = model.rel_out(model.run_ffnn(model.rel_ffnn, pairs))
        scores = scores + top_scores.view(k, 1, 1) + top_scores.view(1, k, 1)
        relations = decode_relations(scores.float().cpu(), [spans[i] for i in kept], archive.relation_labels)
        return ner, relations

    def __call__(self, reports: list[str]) -> list[dict[str, Any]]:
        import torch

        docs = [split_words(r if r else "None", self.archive.model_type) for r in reports]
        out: list[dict[str, Any]] = []
        with torch.inference_mode():
            for start in range(0, len(docs), 64):  # word vectors of 64 reports at a time
                chunk = docs[start:start + 64]
                nonempty = [d for d in chunk if d]
                vectors = iter(self._word_vectors(nonempty)) if nonempty else iter(())
                for words in chunk:
                    if not words:  # a report of whitespace only: no words, no entities
                        out.append(to_annotation([], [], []))
                        continue
                    ner, relations = self._heads(words, next(vectors))
                    out.append(to_annotation(words, ner, relations))
        return out


def extract_archive(path: Path) -> Path:
    """A ``.tar.gz`` archive extracted once into ``$BOXMED_CACHE/radgraph/<key>`` (default
    ``~/.cache/boxmed_eval``; the key follows the archive's path, size and time), with tarfile's
    "data" filter (no links out of the folder, no devices)."""
    import hashlib
    import shutil

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    from boxmed_eval.paths import cache_root

    root = cache_root() / "radgraph"
    target = root / key
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(partial, filter="data")
            partial.rename(target)  # atomic: a half-extracted folder is never used
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that won
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    inner = [p for p in target.iterdir() if p.is_dir()]
    if not (target / "config.json").exists() and len(inner) == 1:  # an archive of one folder
        return inner[0]
    return target


__all__ = ["RadGraphArchive", "RadGraphInference", "build_model", "decode_ner", "decode_relations", "enumerate_spans",
           "extract_archive", "load_weights", "prune", "read_archive", "read_vocabulary", "reference_key_map",
           "split_words", "to_annotation"]
