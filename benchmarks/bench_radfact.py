"""RadFact-style logical precision / recall with the deterministic (rules) judge on real
IU X-Ray generations, and the judge's agreement with RadFact's own labelled examples.

    python benchmarks/bench_radfact.py [--data ../shared/data]

Prints, for the MoERad and R2Gen-codebase generations of the 590 IU X-Ray test studies
(``generated_reports/``), the corpus logical precision, recall and F1 and the CPU seconds they
took; then how many of RadFact's 67 few-shot judgements (``radfact_few_shot.json``) the rules
judge reproduces.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boxmed_eval.metrics import compute_metrics  # noqa: E402
from boxmed_eval.metrics.entailment import few_shot_agreement  # noqa: E402


def _recased(line: str) -> str:
    """R2Gen's cleaned text (lower case, " . " between sentences) back to sentences."""
    return " ".join(part.strip().capitalize() + "." for part in line.split(" .") if part.strip())


def corpora(data: Path) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    found = {}
    moerad = data / "generated_reports" / "moerad_iu_xray"
    if moerad.is_dir():
        refs = {r["study_id"]: r["report"] for r in csv.DictReader((moerad / "gts.csv").open(encoding="utf-8"))}
        hyps = {r["study_id"]: r["report"] for r in csv.DictReader((moerad / "preds.csv").open(encoding="utf-8"))}
        ids = [i for i in refs if i in hyps]
        found["MoERad"] = ({i: refs[i] for i in ids}, {i: hyps[i] for i in ids})
    r2gen = data / "generated_reports" / "r2gen_iu_xray"
    if r2gen.is_dir():
        gts = (r2gen / "gts.csv").read_text(encoding="utf-8").splitlines()
        res = (r2gen / "res.csv").read_text(encoding="utf-8").splitlines()
        found["R2Gen"] = ({str(i): _recased(t) for i, t in enumerate(gts)},
                          {str(i): _recased(t) for i, t in enumerate(res)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    found = corpora(args.data)
    if not found:
        sys.exit(f"no generated reports under {args.data / 'generated_reports'}")
    for name, (refs, hyps) in found.items():
        start = time.process_time()
        corpus = compute_metrics(["radfact"], refs, hyps).corpus
        seconds = time.process_time() - start
        print(f"{name}: {len(refs)} studies, logical precision {corpus['radfact_logical_precision']:.3f}, "
              f"recall {corpus['radfact_logical_recall']:.3f}, F1 {corpus['radfact_logical_f1']:.3f} "
              f"({seconds:.2f} s CPU)")
    agree, total = few_shot_agreement()
    print(f"RadFact few-shot judgements reproduced by the rules judge: {agree} / {total}")


if __name__ == "__main__":
    main()
