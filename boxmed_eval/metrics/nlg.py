"""NLG metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr."""

from __future__ import annotations

import shutil
from typing import Any

from boxmed_eval.metrics.base import METRICS, Metric, MetricResult
from boxmed_eval.records import Prediction, Study
from boxmed_eval.text import normalize_text


@METRICS.register("nlg")
class NLGMetrics(Metric):
    description = "BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap)"
    needs = "pycocoevalcap; a Java runtime for METEOR (apt-get install default-jre-headless)"
    provides = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")

    def compute(self, references: dict[str, str], hypotheses: dict[str, str], *,
                studies: dict[str, Study] | None = None,
                predictions: dict[str, Prediction] | None = None) -> MetricResult:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        ids = list(references)
        gts = {i: [normalize_text(references[i]).lower()] for i in ids}
        res = {i: [normalize_text(hypotheses[i]).lower()] for i in ids}
        result = MetricResult(conventions={"nlg_preprocessing": "lower"})
        corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            result.corpus[f"bleu_{n + 1}"] = float(corpus[n])
            result.per_sample[f"bleu_{n + 1}"] = dict(zip(ids, map(float, per[n])))
        for key, scorer in (("rouge_l", Rouge()), ("cider", Cider())):
            score, scores = scorer.compute_score(gts, res)
            result.corpus[key] = float(score)
            result.per_sample[key] = dict(zip(ids, map(float, scores)))
        if shutil.which("java"):
            from pycocoevalcap.meteor.meteor import Meteor

            meteor = Meteor()
            score, scores = meteor.compute_score(gts, res)
            result.corpus["meteor"] = float(score)
            result.per_sample["meteor"] = dict(zip(ids, map(float, scores)))
        else:
            result.messages.append("meteor skipped: no Java runtime found (apt-get install default-jre-headless)")
        return result
