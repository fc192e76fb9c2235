"""Score a trained BoxMed-RL demo run on demo/val (never test): how recipes were chosen (issue 16).

Prints the phrase-grounding R_IoU of its MCL and SVR weights on the val phrases (SVR prompt,
greedy; paper_demo.phrase_grounding), then runs it in grounded mode on the 60 val studies with
nlg, chexpert and grounding (into val_<run name> beside the run; retrieval into val_retrieval) and prints CheXpert micro F1,
grounding mIoU, BLEU-4 and the distinct reports, beside retrieval and the best constant report.

    boxmed-eval train boxmedrl --stage all --base small --dataset demo --config CFG --out RUN
    python benchmarks/demo_val_check.py RUN [run] [pg]
"""
import sys, json, time
from pathlib import Path
import torch; torch.set_num_threads(1)
from boxmed_eval.datasets import get_dataset
from boxmed_eval.evaluation import RunConfig, run
from boxmed_eval.rundata import load_run
from boxmed_model.paper_demo import phrase_grounding, distinct_reports, best_constant_report
d = Path(sys.argv[1]); what = sys.argv[2:] or ["run", "pg"]
val = get_dataset("demo").load("val")
t = time.time()
if "pg" in what:
    for st in ("mcl", "svr"):
        p = d / st / "final"
        if (p / "config.json").is_file():
            g = phrase_grounding(p, val, 0.5)
            print(st, "val phrases", g["phrases"], "mean R_IoU", round(g["mean_r_iou"], 4), "with box", round(g["with_box"], 3), flush=True)
if "run" in what:
    out = d.parent / f"val_{d.name}"
    run(RunConfig(model="boxmedrl", dataset="demo", split="val", model_args={"weights": str(d), "mode": "grounded"},
                  out=str(out), batch_size=8, metrics=["nlg", "chexpert", "grounding"]))
    r = load_run(out)
    print({k: r.summary.get(k) for k in ("chexpert_f1", "grounding_miou", "bleu_4")}, "distinct", distinct_reports(out))
    retrieval = d.parent / "val_retrieval"
    if not retrieval.exists():
        run(RunConfig(model="retrieval", dataset="demo", split="val", out=str(retrieval), metrics=["nlg", "chexpert", "grounding"]))
    r = load_run(retrieval)
    print("retrieval", {k: r.summary.get(k) for k in ("chexpert_f1", "grounding_miou", "bleu_4")})
    tr = get_dataset("demo").load("train")
    print("best constant", best_constant_report([s.findings for s in tr], [s.findings for s in val])["chexpert_f1"])
print("eval time", round(time.time() - t))
