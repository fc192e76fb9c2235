"""NLG metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap's numbers) and ROUGE-1/2/L F
(rouge-score), corpus and per sample.

The pycocoevalcap scores are computed by re-implementations that perform the *same
floating-point operations in the same order* as pycocoevalcap 1.2 (``bleu_scorer.py``,
``rouge.py``, ``cider_scorer.py``), only faster: n-grams counted with ``Counter``/``zip``,
ROUGE-L's longest common subsequence by the bit-parallel algorithm (an exact integer), CIDEr's
``np.log`` of document frequencies computed once per distinct frequency. METEOR runs pycocoevalcap's
jar (see :mod:`boxmed_eval.metrics.meteor`) in background JVMs while the Python scorers run, so the
two cores work at once. Tests compare every number with pycocoevalcap's own classes on real
reports (``tests/test_metric_nlg.py``); ``exact_backend=True`` calls pycocoevalcap's classes
instead (slower, same numbers).

Conventions (recorded in summary.json): the preprocessing (``preprocess=r2gen|r2gen_iu|lower|none``,
see :mod:`boxmed_eval.metrics.preprocess`), one reference per study, no PTB tokenizer (as R2Gen),
BLEU with pycocoevalcap's "closest" reference length, ROUGE-L with beta 1.2, CIDEr-D-less CIDEr
with document frequencies from the scored corpus (so per-sample CIDEr depends on the corpus),
METEOR 1.5 ``-l en -norm`` with the corpus score from accumulated statistics, rouge-score
F-measures with the Porter stemmer (``rouge_stemmer``) averaged over studies.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np

from boxmed_eval.errors import MissingResourceError
from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.metrics.meteor import JAVA_INSTALL_HINT, MeteorError, compute_meteor, meteor_available
from boxmed_eval.metrics.preprocess import PREPROCESSING_CHOICES, get_preprocessor
from boxmed_eval.records import Prediction, Study

# ---------------------------------------------------------------------------- BLEU (pycocoevalcap)

_BLEU_SMALL = 1e-9
_BLEU_TINY = 1e-15


def _ngram_counts(words: list[str], n: int) -> list[Counter]:
    """Counts of 1..n-grams, each Counter in first-occurrence order (as pycocoevalcap's precook)."""
    counts = [Counter(zip(words))]
    for k in range(2, n + 1):
        counts.append(Counter(zip(*(words[i:] for i in range(k)))))
    return counts


def bleu_scores(references: list[str], hypotheses: list[str], n: int = 4) -> tuple[list[float], list[list[float]]]:
    """pycocoevalcap ``Bleu(n).compute_score`` with one reference per segment."""
    per_sample: list[list[float]] = [[] for _ in range(n)]
    total_test = total_ref = 0
    total_guess = [0] * n
    total_correct = [0] * n
    for ref, hyp in zip(references, hypotheses):
        ref_words = ref.split()
        hyp_words = hyp.split()
        ref_len, test_len = len(ref_words), len(hyp_words)
        ref_counts = _ngram_counts(ref_words, n)
        hyp_counts = _ngram_counts(hyp_words, n)
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = []
        for k in range(n):
            ref_k = ref_counts[k]
            correct.append(sum(min(ref_k[g], c) for g, c in hyp_counts[k].items() if g in ref_k))
        total_test += test_len
        total_ref += ref_len
        bleu = 1.0
        scores = []
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            bleu *= (float(correct[k]) + _BLEU_TINY) / (float(guess[k]) + _BLEU_SMALL)
            scores.append(bleu ** (1.0 / (k + 1)))
        ratio = (test_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
        if ratio < 1:
            for k in range(n):
                scores[k] *= math.exp(1 - 1 / ratio)
        for k in range(n):
            per_sample[k].append(scores[k])
    corpus = []
    bleu = 1.0
    for k in range(n):
        bleu *= float(total_correct[k] + _BLEU_TINY) / (total_guess[k] + _BLEU_SMALL)
        corpus.append(bleu ** (1.0 / (k + 1)))
    ratio = (total_test + _BLEU_TINY) / (total_ref + _BLEU_SMALL)
    if ratio < 1:
        for k in range(n):
            corpus[k] *= math.exp(1 - 1 / ratio)
    return corpus, per_sample


# ---------------------------------------------------------------------------- LCS and ROUGE-L


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Allison & Dix 1986)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


_ROUGE_BETA = 1.2


def rouge_l_scores(references: list[str], hypotheses: list[str]) -> tuple[float, list[float]]:
    """pycocoevalcap ``Rouge().compute_score`` (tokens split on single spaces, beta 1.2)."""
    beta2 = _ROUGE_BETA ** 2
    scores = []
    for ref, hyp in zip(references, hypotheses):
        token_c = hyp.split(" ")
        token_r = ref.split(" ")
        lcs = lcs_length(token_r, token_c)
        prec = lcs / float(len(token_c))
        rec = lcs / float(len(token_r))
        if prec != 0 and rec != 0:
            scores.append(((1 + beta2) * prec * rec) / float(rec + beta2 * prec))
        else:
            scores.append(0.0)
    array = np.array(scores)
    return float(np.mean(array)) if len(array) else 0.0, scores


# ---------------------------------------------------------------------------- CIDEr (pycocoevalcap)


def cider_scores(references: list[str], hypotheses: list[str], n: int = 4,
                 sigma: float = 6.0) -> tuple[float, list[float]]:
    """pycocoevalcap ``Cider().compute_score`` with one reference per segment."""
    ref_counts = []
    for ref in references:
        merged: dict[tuple[str, ...], int] = {}
        for counter in _ngram_counts(ref.split(), n):
            merged.update(counter)
        ref_counts.append(merged)
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(counts.keys())
    if not document_frequency:
        raise ValueError("all references are empty")
    ref_len = np.log(float(len(ref_counts)))
    log_df: dict[int, Any] = {}

    def idf_term(ngram: tuple[str, ...]) -> Any:
        df = document_frequency.get(ngram, 0)
        value = log_df.get(df)
        if value is None:
            value = log_df[df] = ref_len - np.log(max(1.0, float(df)))
        return value

    def counts2vec(counts: dict[tuple[str, ...], int]) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, term_freq in counts.items():
            k = len(ngram) - 1
            value = float(term_freq) * idf_term(ngram)
            vec[k][ngram] = value
            norm[k] += pow(value, 2)
            if k == 1:  # pycocoevalcap counts the length in bigrams
                length += term_freq
        return vec, [np.sqrt(x) for x in norm], length

    penalty_denominator = 2 * sigma ** 2
    scores = []
    for hyp, ref in zip(hypotheses, ref_counts):
        hyp_merged: dict[tuple[str, ...], int] = {}
        for counter in _ngram_counts(hyp.split(), n):
            hyp_merged.update(counter)
        vec, norm, length = counts2vec(hyp_merged)
        vec_ref, norm_ref, length_ref = counts2vec(ref)
        delta = float(length - length_ref)
        val = np.array([0.0] * n)
        for k in range(n):
            total = val[k]
            ref_k = vec_ref[k]
            for ngram, value in vec[k].items():
                ref_value = ref_k.get(ngram, 0.0)
                total += min(value, ref_value) * ref_value
            val[k] = total
            if norm[k] != 0 and norm_ref[k] != 0:
                val[k] /= norm[k] * norm_ref[k]
            val[k] *= np.e ** (-(delta ** 2) / penalty_denominator)
        score = np.array([0.0] * n) + val
        score_avg = np.mean(score)
        score_avg /= 1  # one reference per segment
        score_avg *= 10.0
        scores.append(score_avg)
    return float(np.mean(np.array(scores))), [float(s) for s in scores]


# ---------------------------------------------------------------------------- rouge-score


def _rouge_score_stemmer(use_stemmer: bool) -> Any:
    if not use_stemmer:
        return None
    from rouge_score import tokenizers

    stemmer = tokenizers.DefaultTokenizer(use_stemmer=True)._stemmer
    return _MemoStemmer(stemmer)


class _MemoStemmer:
    def __init__(self, stemmer: Any) -> None:
        self.stem = lru_cache(maxsize=None)(stemmer.stem)


def _fmeasure(precision: float, recall: float) -> float:
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_score_f(references: list[str], hypotheses: list[str], *, use_stemmer: bool = True) -> dict[str, list[float]]:
    """rouge-score's ``RougeScorer(['rouge1','rouge2','rougeL'], use_stemmer).score(ref, hyp)``
    F-measures, per segment."""
    from rouge_score import tokenize

    stemmer = _rouge_score_stemmer(use_stemmer)
    cache: dict[str, list[str]] = {}

    def tokens(text: str) -> list[str]:
        found = cache.get(text)
        if found is None:
            found = cache[text] = tokenize.tokenize(text, stemmer)
        return found

    out: dict[str, list[float]] = {"rouge1_f": [], "rouge2_f": [], "rougeL_f": []}
    for ref, hyp in zip(references, hypotheses):
        target, prediction = tokens(ref), tokens(hyp)
        for n, key in ((1, "rouge1_f"), (2, "rouge2_f")):
            target_ngrams = Counter(zip(*(target[i:] for i in range(n))))
            prediction_ngrams = Counter(zip(*(prediction[i:] for i in range(n))))
            overlap = sum(min(c, prediction_ngrams[g]) for g, c in target_ngrams.items())
            precision = overlap / max(sum(prediction_ngrams.values()), 1)
            recall = overlap / max(sum(target_ngrams.values()), 1)
            out[key].append(_fmeasure(precision, recall))
        if not target or not prediction:
            out["rougeL_f"].append(0.0)
        else:
            lcs = lcs_length(target, prediction)
            out["rougeL_f"].append(_fmeasure(lcs / len(prediction), lcs / len(target)))
    return out


# ---------------------------------------------------------------------------- the metric family


def _pycocoevalcap_scores(references: list[str], hypotheses: list[str]) -> dict[str, tuple[float, list[float]]]:
    """The same scores through pycocoevalcap's own classes (``exact_backend=True``)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    out: dict[str, tuple[float, list[float]]] = {}
    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"bleu_{k + 1}"] = (float(corpus[k]), [float(x) for x in per[k]])
    score, scores = Rouge().compute_score(gts, res)
    out["rouge_l"] = (float(score), [float(x) for x in scores])
    if any(r.split() for r in references):
        score, scores = Cider().compute_score(gts, res)
        out["cider"] = (float(score), [float(x) for x in scores])
    return out


@METRICS.register("nlg")
class NLGMetrics(Metric):
    description = ("BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap's numbers, fast) and ROUGE-1/2/L F "
                   "(rouge-score); options preprocess=r2gen|r2gen_iu|lower|none")
    needs = f"pycocoevalcap, rouge-score; METEOR needs a Java runtime ({JAVA_INSTALL_HINT})"
    provides = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
                "rouge1_f", "rouge2_f", "rougeL_f")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.preprocess = str(options.get("preprocess", "r2gen"))
        get_preprocessor(self.preprocess)  # fail early on an unknown choice
        self.meteor_shards = int(options["meteor_shards"]) if options.get("meteor_shards") else None
        self.meteor_timeout = float(options.get("meteor_timeout", 600.0))
        self.filter_paraphrases = _as_bool(options.get("meteor_filter_paraphrases", True))
        self.rouge_stemmer = _as_bool(options.get("rouge_stemmer", True))
        self.exact_backend = _as_bool(options.get("exact_backend", False))

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        ids = list(references)
        clean = get_preprocessor(self.preprocess)
        refs = [clean(references[i] if isinstance(references[i], str) else "") for i in ids]
        hyps = [clean(hypotheses[i] if isinstance(hypotheses.get(i), str) else "") for i in ids]
        result = MetricResult(conventions={
            "nlg_preprocessing": self.preprocess,
            "nlg_backend": "pycocoevalcap 1.2 (exact re-implementation)" if not self.exact_backend else "pycocoevalcap 1.2",
            "meteor": "METEOR 1.5 jar, -l en -norm, corpus score from accumulated statistics",
            "cider": "pycocoevalcap CIDEr, document frequencies from the scored references",
            "rouge_score": f"rouge-score F-measure, use_stemmer={self.rouge_stemmer}, mean over studies",
        })
        if not ids:
            result.messages.append("nlg: no studies to score")
            return result

        # METEOR runs in its own JVMs; start it first so that it overlaps the Python scorers.
        ok, reason = meteor_available()
        meteor_future = None
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")
        if ok:
            meteor_future = pool.submit(compute_meteor, refs, hyps, shards=self.meteor_shards,
                                        filter_paraphrases=self.filter_paraphrases, timeout=self.meteor_timeout)
        else:
            result.messages.append(f"metric meteor skipped: {reason}; the other NLG metrics were computed")
        try:
            self._python_scores(ids, refs, hyps, result)
            if meteor_future is not None:
                try:
                    corpus, per = meteor_future.result()
                except (MeteorError, MissingResourceError) as exc:
                    result.messages.append(f"metric meteor skipped: {exc}; the other NLG metrics were computed")
                else:
                    result.corpus["meteor"] = float(corpus)
                    result.per_sample["meteor"] = dict(zip(ids, map(float, per)))
        finally:
            pool.shutdown(wait=True)
        return result

    def _python_scores(self, ids: list[str], refs: list[str], hyps: list[str], result: MetricResult) -> None:
        if self.exact_backend:
            scores = _pycocoevalcap_scores(refs, hyps)
        else:
            scores = {}
            corpus, per = bleu_scores(refs, hyps)
            for k in range(4):
                scores[f"bleu_{k + 1}"] = (corpus[k], per[k])
            scores["rouge_l"] = rouge_l_scores(refs, hyps)
            if any(r.split() for r in refs):
                scores["cider"] = cider_scores(refs, hyps)
        if "cider" not in scores:
            result.messages.append("metric cider skipped: every reference is empty")
        for name, (corpus_value, per) in scores.items():
            result.corpus[name] = float(corpus_value)
            result.per_sample[name] = dict(zip(ids, map(float, per)))
        for name, values in rouge_score_f(refs, hyps, use_stemmer=self.rouge_stemmer).items():
            result.corpus[name] = float(np.mean(values))
            result.per_sample[name] = dict(zip(ids, values))


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"0", "false", "no", "off", ""}
    return bool(value)


__all__ = ["NLGMetrics", "PREPROCESSING_CHOICES", "bleu_scores", "cider_scores", "lcs_length",
           "rouge_l_scores", "rouge_score_f"]
