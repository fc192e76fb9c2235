"""Score a trained BoxMed-RL demo run on demo/val (never test): how recipes were chosen (issue 16).

Prints the phrase-grounding R_IoU of its MCL and SVR weights on the val phrases (SVR prompt,
greedy; paper_demo.phrase_grounding), then runs it in grounded mode on the 60 val studies with
nlg, chexpert and grounding (into val_<run name> beside the run; retrieval into val_retrieval)
and prints CheXpert micro F1, grounding mIoU, BLEU-4 and the distinct reports, beside retrieval and the best constant report.

    boxmed-eval train boxmedrl --stage all --base small --dataset demo --config CFG --out RUN
    python benchmarks/demo_val_check.py RUN [run] [pg]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

METRICS = ["nlg", "chexpert", "grounding"]
SHOWN = ("chexpert_f1", "grounding_miou", "bleu_4")


def main() -> None:
    import torch

    from boxmed_eval.datasets import get_dataset
    from boxmed_eval.evaluation import RunConfig, run
    from boxmed_eval.rundata import load_run
    from boxmed_model.paper_demo import best_constant_report, distinct_reports, phrase_grounding

    torch.set_num_threads(1)
    trained = Path(sys.argv[1])
    what = sys.argv[2:] or ["run", "pg"]
    demo = get_dataset("demo")
    val = demo.load("val")
    started = time.time()
    if "pg" in what:
        for stage in ("mcl", "svr"):
            weights = trained / stage / "final"
            if (weights / "config.json").is_file():
                result = phrase_grounding(weights, val, 0.5)
                print(stage, "val phrases", result["phrases"], "mean R_IoU", round(result["mean_r_iou"], 4),
                      "with box", round(result["with_box"], 3), flush=True)
    if "run" in what:
        out = trained.parent / f"val_{trained.name}"
        run(RunConfig(model="boxmedrl", dataset="demo", split="val", out=str(out), batch_size=8, metrics=METRICS,
                      model_args={"weights": str(trained), "mode": "grounded"}))
        summary = load_run(out).summary
        print({k: summary.get(k) for k in SHOWN}, "distinct", distinct_reports(out))
        retrieval = trained.parent / "val_retrieval"
        if not retrieval.exists():
            run(RunConfig(model="retrieval", dataset="demo", split="val", out=str(retrieval), metrics=METRICS))
        summary = load_run(retrieval).summary
        print("retrieval", {k: summary.get(k) for k in SHOWN})
        train = demo.load("train")
        print("best constant", best_constant_report([s.findings for s in train], [s.findings for s in val])["chexpert_f1"])
    print("eval time", round(time.time() - started))


if __name__ == "__main__":
    main()
