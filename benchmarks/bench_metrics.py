"""Speed of the NLG (+ CE) metrics against the reference way of computing them.

Reference: pycocoevalcap's Bleu(4), Meteor, Rouge, Cider called one after another on the same
texts (R2Gen's way, plus CIDEr), a fresh ``Meteor()`` (JVM) included, as every evaluation
script does. Ours: ``compute_metrics(["nlg"(, "chexpert")], ...)`` on the raw texts, its R2Gen
preprocessing included; the reference gets the texts already cleaned (not timed).

Corpus: real radiology text from IU X-Ray (../shared/data/iu_xray/indiana_reports.csv):
findings + impression of each report as the reference, those of a shuffled other report as the
hypothesis; 3,858 pairs (the MIMIC-CXR test size) and 10x that.

    python benchmarks/bench_metrics.py [--sizes 3858,38580] [--repeats 1] [--no-ce] [--data PATH]

Prints wall and CPU seconds (this process + its JVMs), the ratios ours/reference and whether
every number is identical (exit code 1 if not). Wall times depend on the machine and its load
(the load average is printed): run it on an idle machine; the CPU ratio is steadier.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "indiana_reports.csv"


def load_reports(path: Path) -> list[str]:
    frame = pd.read_csv(path)
    texts = (frame["findings"].fillna("") + " " + frame["impression"].fillna("")).str.strip()
    return [t for t in texts if t]


def build_pairs(reports: list[str], n_pairs: int, seed: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    rng = np.random.default_rng(seed)
    refs: dict[str, str] = {}
    hyps: dict[str, str] = {}
    i = 0
    while i < n_pairs:
        order = rng.permutation(len(reports))
        shuffled = rng.permutation(len(reports))
        for a, b in zip(order, shuffled):
            if i == n_pairs:
                break
            refs[f"s{i}"] = reports[a]
            hyps[f"s{i}"] = reports[b]
            i += 1
    return refs, hyps


def reference_scores(refs: list[str], hyps: list[str]) -> dict[str, object]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    out: dict[str, object] = {}
    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"bleu_{k + 1}"] = (corpus[k], list(per[k]))
    meteor = Meteor()
    score, scores = meteor.compute_score(gts, res)
    out["meteor"] = (score, list(scores))
    score, scores = Rouge().compute_score(gts, res)
    out["rouge_l"] = (score, list(scores))
    score, scores = Cider().compute_score(gts, res)
    out["cider"] = (score, list(scores))
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the JVMs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3858,38580")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-ce", action="store_true", help="NLG only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the figures
    if not args.data.is_file():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2

    from boxmed_eval.metrics.base import METRICS, compute_metrics
    from boxmed_eval.metrics.meteor import ParaphraseIndex, meteor_dir
    from boxmed_eval.metrics.preprocess import preprocess_r2gen

    names = ["nlg"]
    if not args.no_ce and "chexpert" in METRICS.names():
        names.append("chexpert")
    print(f"metrics: {', '.join(names)}" + ("" if "chexpert" in names else " (CE metric not available: NLG only)"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores available: {cores}; load average: {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    ParaphraseIndex.cached(meteor_dir() / "data" / "paraphrase-en.gz")  # one-time, cached on disk
    print(f"METEOR paraphrase index ready in {time.perf_counter() - start:.1f} s (built once per machine)")

    reports = load_reports(args.data)
    all_equal = True
    for size in (int(s) for s in args.sizes.split(",")):
        refs, hyps = build_pairs(reports, size)
        ids = list(refs)
        clean_refs = [preprocess_r2gen(refs[i]) for i in ids]
        clean_hyps = [preprocess_r2gen(hyps[i]) for i in ids]
        for repeat in range(args.repeats):
            load = os.getloadavg()[0]
            start, cpu = time.perf_counter(), cpu_seconds()
            expected = reference_scores(clean_refs, clean_hyps)
            reference_s, reference_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            start, cpu = time.perf_counter(), cpu_seconds()
            ours = compute_metrics(names, refs, hyps)
            ours_s, ours_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            mismatches = []
            for name, (corpus, per) in expected.items():
                got_per = [ours.per_sample[name][i] for i in ids]
                if float(corpus) != ours.corpus[name] or [float(x) for x in per] != got_per:
                    mismatches.append(name)
            all_equal &= not mismatches
            print(f"pairs={size:>6} run={repeat + 1} (load {load:.1f}): reference {reference_s:6.2f} s wall "
                  f"({reference_cpu:6.2f} s CPU) | ours ({'+'.join(names)}) {ours_s:6.2f} s wall ({ours_cpu:6.2f} s CPU)"
                  f" | ratio {ours_s / reference_s:.2f} wall, {ours_cpu / reference_cpu:.2f} CPU | numbers identical: "
                  f"{'yes' if not mismatches else 'NO ' + ','.join(mismatches)}")
            for message in ours.messages:
                print(f"  message: {message}")
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())
