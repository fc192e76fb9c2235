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
    cache: dict[str, tuple[int, list[Counter]]] = {}

    def counts_of(text: str) -> tuple[int, list[Counter]]:
        found = cache.get(text)
        if found is None:
            words = text.split()
            found = cache[text] = (len(words), _ngram_counts(words, n))
        return found

    for ref, hyp in zip(references, hypotheses):
        ref_len, ref_counts = counts_of(ref)
        test_len, hyp_counts = counts_of(hyp)
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


def _merged_ngrams(text: str, n: int) -> dict[tuple[str, ...], int]:
    """pycocoevalcap's ``precook``: 1..n-gram counts, unigrams first, each in first-occurrence order."""
    merged: dict[tuple[str, ...], int] = {}
    for counter in _ngram_counts(text.split(), n):
        merged.update(counter)
    return merged


def cider_scores(references: list[str], hypotheses: list[str], n: int = 4,
                 sigma: float = 6.0) -> tuple[float, list[float]]:
    """pycocoevalcap ``Cider().compute_score`` with one reference per segment.

    Same operations in the same order as ``CiderScorer.compute_cider``, on Python floats
    (IEEE doubles like numpy's scalars; ``pow`` and ``sqrt`` are the same C functions), with
    ``np.log`` evaluated once per distinct document frequency and each distinct text vectorised
    once.
    """
    counts_cache: dict[str, dict[tuple[str, ...], int]] = {}

    def counts_of(text: str) -> dict[tuple[str, ...], int]:
        found = counts_cache.get(text)
        if found is None:
            found = counts_cache[text] = _merged_ngrams(text, n)
        return found

    ref_counts = [counts_of(ref) for ref in references]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(counts.keys())
    if not document_frequency:
        raise ValueError("all references are empty")
    ref_len = np.log(float(len(ref_counts)))
    # pycocoevalcap: float(tf) * (ref_len - np.log(max(1.0, df))), df a float count (0 if unseen)
    idf_by_df = {df: float(ref_len - np.log(max(1.0, float(df))))
                 for df in set(document_frequency.values()) | {0}}
    idf = {ngram: idf_by_df[df] for ngram, df in document_frequency.items()}
    unseen_idf = idf_by_df[0]
    vec_cache: dict[str, tuple[list[dict], list[float], int]] = {}

    def vector_of(text: str) -> tuple[list[dict], list[float], int]:
        found = vec_cache.get(text)
        if found is not None:
            return found
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, term_freq in counts_of(text).items():
            k = len(ngram) - 1
            value = float(term_freq) * idf.get(ngram, unseen_idf)
            vec[k][ngram] = value
            norm[k] += pow(value, 2)
            if k == 1:  # pycocoevalcap counts the length in bigrams
                length += term_freq
        found = vec_cache[text] = (vec, [math.sqrt(x) for x in norm], length)
        return found

    penalty_denominator = 2 * sigma ** 2
    scores = []
    for hyp, ref in zip(hypotheses, references):
        vec, norm, length = vector_of(hyp)
        vec_ref, norm_ref, length_ref = vector_of(ref)
        delta = float(length - length_ref)
        penalty = np.e ** (-(delta ** 2) / penalty_denominator)
        val = []
        for k in range(n):
            total = 0.0
            ref_k = vec_ref[k]
            for ngram, value in vec[k].items():
                ref_value = ref_k.get(ngram, 0.0)
                total += min(value, ref_value) * ref_value
            if norm[k] != 0 and norm_ref[k] != 0:
                total /= norm[k] * norm_ref[k]
            total *= penalty
            val.append(total)
        score = np.array([0.0] * n) + np.array(val)
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
    background = True  # METEOR's JVMs run while the other families compute

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.preprocess = str(options.get("preprocess", "r2gen"))
        get_preprocessor(self.preprocess)  # fail early on an unknown choice
        self.meteor_shards = int(options["meteor_shards"]) if options.get("meteor_shards") else None
        self.meteor_timeout = float(options.get("meteor_timeout", 600.0))
        self.meteor_memory = str(options.get("meteor_memory", "2G"))  # the JVM heap, as pycocoevalcap's -Xmx2G
        self.filter_paraphrases = _as_bool(options.get("meteor_filter_paraphrases", True))
        self.rouge_stemmer = _as_bool(options.get("rouge_stemmer", True))
        self.exact_backend = _as_bool(options.get("exact_backend", False))

        self._started: tuple[dict[str, str], dict[str, str], list[str], list[str]] | None = None
        self._meteor_future: concurrent.futures.Future | None = None
        self._meteor_skip_reason = ""
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _prepare(self, references: dict[str, str], hypotheses: dict[str, str]) -> tuple[list[str], list[str]]:
        clean = get_preprocessor(self.preprocess)
        refs = [clean(references[i] if isinstance(references[i], str) else "") for i in references]
        hyps = [clean(hypotheses[i] if isinstance(hypotheses.get(i), str) else "") for i in references]
        return refs, hyps

    def start(self, references: dict[str, str], hypotheses: dict[str, str], *,
              studies: dict[str, Study] | None = None,
              predictions: dict[str, Prediction] | None = None) -> None:
        """Preprocess and launch METEOR's JVMs in the background: they work while the Python
        scorers (and the other metric families) run."""
        refs, hyps = self._prepare(references, hypotheses)
        self._started = (references, hypotheses, refs, hyps)
        ok, reason = meteor_available()
        if not ok:
            self._meteor_skip_reason = reason
            return
        if not refs:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")
        self._meteor_future = self._pool.submit(
            compute_meteor, refs, hyps, shards=self.meteor_shards, filter_paraphrases=self.filter_paraphrases,
            timeout=self.meteor_timeout, memory=self.meteor_memory)

    def close(self) -> None:
        if self._pool is not None:
            # compute_meteor kills its JVMs when it returns or times out
            self._pool.shutdown(wait=True)
            self._pool = None
        self._meteor_future = None
        self._started = None

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        if self._started is None or self._started[0] is not references or self._started[1] is not hypotheses:
            self.close()
            self.start(references, hypotheses)
        try:
            return self._compute_started()
        finally:
            self.close()

    def _compute_started(self) -> MetricResult:
        assert self._started is not None
        references, hypotheses, refs, hyps = self._started
        ids = list(references)
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
        if self._meteor_skip_reason:
            result.messages.append(f"metric meteor skipped: {self._meteor_skip_reason}; "
                                   "the other NLG metrics were computed")
        self._python_scores(ids, refs, hyps, result)
        if self._meteor_future is not None:
            try:
                meteor = self._meteor_future.result()
            except (MeteorError, MissingResourceError) as exc:
                result.messages.append(f"metric meteor skipped: {exc}; the other NLG metrics were computed")
            else:
                result.per_sample["meteor"] = dict(zip(ids, meteor.per_segment))
                if len(meteor.failed) < len(ids):
                    result.corpus["meteor"] = float(meteor.corpus)
                for index, error in sorted(meteor.failed.items()):
                    generation = hypotheses.get(ids[index])
                    words = len(generation.split()) if isinstance(generation, str) else 0
                    result.messages.append(
                        f"metric meteor: the METEOR jar failed on study {ids[index]!r} ({error}; its generation "
                        f"has {words:,} words): its METEOR is NaN and the corpus METEOR is over the other "
                        f"{len(ids) - len(meteor.failed)} of {len(ids)} studies")
                if meteor.failed:
                    result.conventions["meteor_failed_studies"] = ", ".join(ids[i] for i in sorted(meteor.failed))
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
