"""SembScore (Yu et al., Patterns 2023; CXR-Report-Metric's ``semb_score``): the cosine
similarity of the CheXbert embeddings of the generated and the reference report.

The embedding is CXR-Report-Metric's ``CheXbert/src/encode.py``: the final hidden state of the
[CLS] token of CheXbert's BERT (no dropout, no heads), on the report cleaned and truncated as
the CheXbert labeler does (strip, newlines and whitespace runs to one space, at most 512 tokens).
The cosine is taken in float32 as ``add_semb_col`` does on the stored float32 embeddings.

The model is the ``chexbert`` labeler's (``boxmed_eval.metrics.labelers.chexbert``): same
checkpoint lookup (``sembscore.checkpoint=PATH``, env ``BOXMED_CHEXBERT_CHECKPOINT``, HF cache),
same strict key check, same tokenizer (``sembscore.bert=DIR`` / ``BOXMED_CHEXBERT_BERT``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from boxmed_eval.errors import MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study

_HARNESS_OPTIONS = {"cache_dir", "dataset"}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float32 (CXR-Report-Metric: ``(l * p).sum() / (|l| |p|)``)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@METRICS.register("sembscore")
class SembScoreMetric(Metric):
    description = "SembScore: cosine of CheXbert [CLS] embeddings of generated and reference report (CXR-Report-Metric)"
    needs = ("chexbert.pth (sembscore.checkpoint=PATH, env BOXMED_CHEXBERT_CHECKPOINT, or the HF cache of "
             "StanfordAIMI/RRG_scorers) and a bert-base-uncased tokenizer (sembscore.bert=DIR / BOXMED_CHEXBERT_BERT)")
    provides = ("sembscore",)
    default = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.labeler_options = {k: v for k, v in options.items() if k not in _HARNESS_OPTIONS}
        self._labeler: Any = None

    def _get_labeler(self) -> Any:
        if self._labeler is None:
            from boxmed_eval.metrics.labelers.chexbert import CheXbertLabeler

            self._labeler = CheXbertLabeler(progress=False, **self.labeler_options)
        return self._labeler

    def available(self) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return False, f"needs torch and transformers ({exc})"
        try:
            self._get_labeler()  # finds the checkpoint (never downloads)
        except MissingResourceError as exc:
            message = str(exc).replace("--checkpoint PATH", "sembscore.checkpoint=PATH")
            return False, message.split("; the default labeler")[0]  # that hint is about chexpert
        return True, ""

    def embed(self, reports: list[str]) -> np.ndarray:
        """CheXbert [CLS] embeddings (n x hidden, float32), batched, longest first."""
        import torch

        labeler = self._get_labeler()
        labeler._load()  # the labeler's model: strict keys, weights_only, its device
        model, tokenizer, device = labeler._model, labeler._tokenizer, labeler._device
        texts = [labeler.prepare(r) for r in reports]
        out = np.zeros((len(texts), model.bert.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), labeler.batch_size):
                batch = order[start:start + labeler.batch_size]
                encoded = tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                    max_length=labeler._max_tokens, return_tensors="pt")
                hidden = model.bert(input_ids=encoded["input_ids"].to(device),
                                    attention_mask=encoded["attention_mask"].to(device)).last_hidden_state
                out[batch] = hidden[:, 0, :].float().cpu().numpy()
        return out

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        texts = [references[i] for i in ids] + [hypotheses[i] for i in ids]
        unique = list(dict.fromkeys(texts))  # embeddings depend on the text only
        vectors = self.embed(unique) if unique else np.zeros((0, 1), dtype=np.float32)
        index = {t: k for k, t in enumerate(unique)}
        ref_vec = vectors[[index[references[i]] for i in ids]] if ids else vectors[:0]
        hyp_vec = vectors[[index[hypotheses[i]] for i in ids]] if ids else vectors[:0]
        scores = cosine_rows(ref_vec, hyp_vec) if ids else np.zeros(0)
        result = MetricResult()
        result.per_sample["sembscore"] = dict(zip(ids, map(float, scores)))
        result.corpus["sembscore"] = float(np.mean(scores)) if len(scores) else float("nan")
        result.conventions["sembscore"] = ("CXR-Report-Metric semb_score: float32 cosine of CheXbert [CLS] final "
                                           f"hidden states; checkpoint {self._get_labeler().checkpoint_path}")
        return result


__all__ = ["SembScoreMetric", "cosine_rows"]
