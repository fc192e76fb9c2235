"""CheXbert (Smit et al. 2020) inference on transformers: the ``chexbert`` labeler.

Architecture (stanfordmlgroup/CheXbert ``src/models/bert_labeler.py``): a ``bert-base-uncased``
``BertModel``; the final hidden state of the [CLS] token -> dropout -> 13 linear heads of 4
classes (0 blank, 1 positive, 2 negative, 3 uncertain) for the first 13 observations in
CheXbert order + 1 linear head of 2 classes (0 blank, 1 positive) for No Finding. Reports are
whitespace-normalised and truncated to 512 tokens ([CLS] + 510 + [SEP]) as CheXbert does.

Weights: ``chexbert.pth`` (a dict with ``model_state_dict``; keys prefixed ``module.`` by
DataParallel: ``module.bert.*``, ``module.linear_heads.{0..13}.weight|bias``). Found, in
order: the ``checkpoint`` option (``--checkpoint``), the environment variable
``BOXMED_CHEXBERT_CHECKPOINT``, then the Hugging Face cache entry of ``StanfordAIMI/RRG_scorers``
/ ``chexbert.pth`` (the file f1chexbert and RadEval download), looked up with
``local_files_only=True``: nothing is downloaded here. Loaded with ``weights_only=True`` and a
strict key check (f1chexbert loads with ``strict=False``, which hides a wrong checkpoint).

Tokenizer and BERT config: the ``bert`` option / ``BOXMED_CHEXBERT_BERT`` (a local
``bert-base-uncased`` directory), else ``bert-base-uncased`` from the Hugging Face cache
(``local_files_only``). Without a config file the defaults of ``BertConfig`` (= bert-base) apply.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from boxmed_eval.errors import BoxmedError, MissingResourceError
from boxmed_eval.metrics.labelers import LABELERS, Labeler, Labels
from boxmed_eval.records import CHEXPERT_CLASSES

log = logging.getLogger(__name__)

HF_REPO_ID = "StanfordAIMI/RRG_scorers"
HF_FILENAME = "chexbert.pth"
BERT_NAME = "bert-base-uncased"
CHECKPOINT_ENV = "BOXMED_CHEXBERT_CHECKPOINT"
BERT_ENV = "BOXMED_CHEXBERT_BERT"
MAX_TOKENS = 512

# Head i predicts CHEXPERT_CLASSES[i] (CheXbert order). Class indices -> CheXpert values.
HEAD_VALUES: tuple[int | None, ...] = (None, 1, 0, -1)  # blank, positive, negative, uncertain
NO_FINDING_VALUES: tuple[int | None, ...] = (None, 1)  # blank, positive

# Buffers that some transformers versions save and others do not (not weights): ignored.
_OPTIONAL_BUFFERS = frozenset({"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"})


def build_chexbert_model(config: Any) -> Any:
    """The CheXbert module (``bert`` + ``dropout`` + ``linear_heads``) for a ``BertConfig``."""
    import torch
    from transformers import BertModel

    class CheXbertModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config)  # with pooler: the checkpoint holds its weights
            self.dropout = torch.nn.Dropout(0.1)
            hidden = config.hidden_size
            heads = [torch.nn.Linear(hidden, 4) for _ in range(13)] + [torch.nn.Linear(hidden, 2)]
            self.linear_heads = torch.nn.ModuleList(heads)

        def forward(self, input_ids: Any, attention_mask: Any) -> list[Any]:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            cls = self.dropout(hidden[:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return CheXbertModel()


def load_chexbert_state_dict(path: str | os.PathLike[str], expected_keys: set[str]) -> dict[str, Any]:
    """Read ``chexbert.pth`` safely and check its keys exactly against ``expected_keys``."""
    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused / corrupt file: say which file
        raise BoxmedError(f"{path}: cannot load the CheXbert checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise BoxmedError(f"{path}: not a CheXbert checkpoint (expected a dict with 'model_state_dict')")
    state = checkpoint["model_state_dict"]
    prefixed = [k.startswith("module.") for k in state]
    if any(prefixed) and not all(prefixed):
        raise BoxmedError(f"{path}: some keys have the DataParallel prefix 'module.' and others not")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    for key in _OPTIONAL_BUFFERS:
        state.pop(key, None)
    expected = expected_keys - _OPTIONAL_BUFFERS
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise BoxmedError(
            f"{path}: checkpoint keys do not match the CheXbert architecture "
            f"(missing {len(missing)}: {missing[:6]}; unexpected {len(unexpected)}: {unexpected[:6]})\n"
            "  fix: pass the original chexbert.pth (keys module.bert.* and module.linear_heads.0..13.*)")
    return state


class CheXbertLabeler(Labeler):
    """CheXbert labels (1 / 0 / -1 / blank) for the 14 observations, batched, GPU when present."""

    description = "CheXbert (BERT + 14 heads) on transformers"
    needs = (f"chexbert.pth (--checkpoint PATH, env {CHECKPOINT_ENV}, or the HF cache of {HF_REPO_ID}) and a "
             f"bert-base-uncased tokenizer (env {BERT_ENV} or the HF cache)")

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, bert: str | os.PathLike[str] | None = None,
                 device: str | None = None, batch_size: int = 32, progress: bool = True, **options: Any) -> None:
        super().__init__(checkpoint=checkpoint, bert=bert, device=device, batch_size=batch_size, **options)
        self.checkpoint_path = self._find_checkpoint(checkpoint)
        self.bert_source = self._find_bert(bert)
        self.device_name = device
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None

    # ------------------------------------------------------------------ resources

    @staticmethod
    def _find_checkpoint(checkpoint: str | os.PathLike[str] | None) -> Path:
        given = checkpoint or os.environ.get(CHECKPOINT_ENV)
        if given:
            path = Path(given).expanduser()
            if path.is_dir():
                path = path / HF_FILENAME
            if not path.is_file():
                raise MissingResourceError(
                    f"CheXbert checkpoint {path} not found; pass the path of chexbert.pth with --checkpoint PATH "
                    f"(or set {CHECKPOINT_ENV})")
            return path
        try:
            from huggingface_hub import hf_hub_download

            # cache_dir read now, so HF_HUB_CACHE set after import is honoured (None: the default)
            return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=HF_FILENAME, local_files_only=True,
                                        cache_dir=os.environ.get("HF_HUB_CACHE")))
        except Exception:  # not in the cache (we never download here)
            raise MissingResourceError(
                f"the chexbert labeler needs chexbert.pth: pass --checkpoint PATH (or set {CHECKPOINT_ENV}=PATH), "
                f"or put it in the Hugging Face cache first (huggingface-cli download {HF_REPO_ID} {HF_FILENAME}); "
                "the default labeler 'rules' needs nothing") from None

    @staticmethod
    def _find_bert(bert: str | os.PathLike[str] | None) -> str:
        given = bert or os.environ.get(BERT_ENV)
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise MissingResourceError(
                    f"bert-base-uncased directory {path} not found; pass a local directory with vocab.txt "
                    f"(and config.json) via --bert / {BERT_ENV}")
            return str(path)
        return BERT_NAME

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import BertConfig, BertTokenizerFast

        try:
            self._tokenizer = BertTokenizerFast.from_pretrained(self.bert_source, local_files_only=True)
        except Exception as exc:
            raise MissingResourceError(
                f"cannot load the bert-base-uncased tokenizer from {self.bert_source!r} offline ({type(exc).__name__}); "
                f"set {BERT_ENV}=DIR to a local bert-base-uncased directory or put it in the Hugging Face cache") from None
        try:
            config = BertConfig.from_pretrained(self.bert_source, local_files_only=True)
        except Exception:
            config = BertConfig()  # bert-base-uncased defaults: what CheXbert uses
            log.info("no BERT config.json at %s; using bert-base-uncased defaults", self.bert_source)
        model = build_chexbert_model(config)
        own = model.state_dict()
        state = load_chexbert_state_dict(self.checkpoint_path, set(own))
        for key in _OPTIONAL_BUFFERS & set(own):  # index buffers, not weights: keep the model's own
            state[key] = own[key]
        model.load_state_dict(state, strict=True)
        self._max_tokens = min(MAX_TOKENS, int(config.max_position_embeddings))
        if self.device_name:
            self._device = torch.device(self.device_name)
        else:
            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model = model.to(self._device).eval()

    def describe(self) -> dict[str, Any]:
        return {"labeler": "chexbert", "labeler_checkpoint": str(self.checkpoint_path)}

    # ------------------------------------------------------------------ labelling

    @staticmethod
    def prepare(report: str) -> str:
        """CheXbert's input cleaning: strip, newlines to spaces, collapse whitespace."""
        return re.sub(r"\s+", " ", (report or "").replace("\n", " ")).strip()

    def label(self, reports: list[str]) -> list[Labels]:
        if not reports:
            return []
        self._load()
        import torch
        from tqdm.auto import tqdm

        texts = [self.prepare(r) for r in reports]
        # Longest first: batches of similar length waste little padding; order restored below.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: list[Labels | None] = [None] * len(texts)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="CheXbert", unit="batch",
                              disable=not self.progress or len(batches) < 2):
                encoded = self._tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                          max_length=self._max_tokens, return_tensors="pt")
                logits = self._model(encoded["input_ids"].to(self._device),
                                     encoded["attention_mask"].to(self._device))
                classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1).tolist()
                for row, index in zip(classes, batch):
                    results[index] = self.to_labels(row)
        return [r if r is not None else {} for r in results]  # type: ignore[misc]

    @staticmethod
    def to_labels(head_classes: list[int]) -> Labels:
        """Map the 14 heads' argmax classes to ``{class: 1/0/-1/None}``."""
        labels: Labels = {}
        for name, value in zip(CHEXPERT_CLASSES, head_classes):
            table = NO_FINDING_VALUES if name == "No Finding" else HEAD_VALUES
            labels[name] = table[value]
        return labels


LABELERS.register("chexbert")(CheXbertLabeler)

__all__ = ["CheXbertLabeler", "build_chexbert_model", "load_chexbert_state_dict", "HF_REPO_ID", "HF_FILENAME"]
