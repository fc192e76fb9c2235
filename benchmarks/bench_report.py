"""Size and build time of `boxmed-eval report` for a run of the MIMIC-CXR test size (3,858 studies).

The run is synthetic but complete: the studies of the offline demo dataset (images, reference
boxes, findings) repeated under new ids up to --n, each "generated" report being another demo
study's findings with that study's boxes and a reasoning paragraph, scored for real with
`boxmed-eval score --run DIR --metrics nlg,chexpert,grounding`, plus GREEN columns and judge
replies of realistic length (no judge is run). Then the report is built with each --images mode.

    python benchmarks/bench_report.py [--n 3858] [--out /tmp/bench-report] [--thumbnail 256]

Prints, per mode, the page size, the size of the thumbnail folder (link), and the build time.
Demo images are synthetic 256x256 radiographs; real ones are larger but thumbnails are what is
stored, so the sizes carry over (a JPEG thumbnail of a real CXR is of the same order).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

REASONING = ("<think>The cardiac silhouette is assessed first, then the mediastinum, the hila, both lungs from apex "
             "to base, the costophrenic angles and the osseous structures. {finding}</think>")
GREEN_REPLY = ("[Explanation]:\nThe candidate report describes {a} finding(s) absent from the reference and omits "
               "{b} finding(s) that the reference reports; the location and severity of the remaining findings "
               "agree.\n\n[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: {a}.\n"
               "(b) Missing a finding present in the reference: {b}.\n(c) Misidentification of a finding's anatomic "
               "location/position: 0.\n(d) Misassessment of the severity of a finding: 0.\n(e) Mentioning a "
               "comparison that isn't in the reference: 0.\n(f) Omitting a comparison detailing a change from a "
               "prior study: 0.\n\n[Clinically Insignificant Errors]:\n(a) ... : 0.\n\n[Matched Findings]:\n{m}. ")


def make_run(out: Path, n: int, seed: int = 0) -> Path:
    from click.testing import CliRunner

    from boxmed_eval.cli import main
    from boxmed_eval.datasets.base import get_dataset

    adapter = get_dataset("demo", None)
    base = [s for split in ("train", "val", "test") for s in adapter.load(split)]
    from PIL import Image

    rng = np.random.default_rng(seed)
    references, predictions = [], []
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    for k in range(n):
        study = base[k % len(base)]
        source = base[int(rng.integers(len(base)))]
        study_id = f"syn{k:05d}-{study.id}"
        record = study.to_dict()
        record["id"] = study_id
        # a distinct frontal image per study (as a real split has), so no thumbnail is shared
        with Image.open(study.image_paths[0]) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-3, 4, size=pixels.shape), 0, 255).astype(np.uint8)
        record["image_paths"][0] = str(out / "images" / f"{study_id}.png")
        Image.fromarray(pixels).save(record["image_paths"][0])
        references.append(record)
        predictions.append({"id": study_id, "report": source.findings,
                            "reasoning": REASONING.format(finding=source.findings),
                            "boxes": [b.to_dict() for b in source.boxes]})
    (out / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in references))
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (out / "run.json").write_text(json.dumps({"model": "synthetic", "dataset": "demo", "split": "test",
                                              "n_studies": n, "note": "bench_report.py"}))
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["score", "--run", str(out), "--metrics", "nlg,chexpert,grounding"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    print(f"scored {n} studies in {time.perf_counter() - started:.0f} s")
    # GREEN's columns and replies, of realistic length (no judge is run here)
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str})
    a, b, m = rng.poisson(1.0, n), rng.poisson(1.2, n), rng.poisson(2.5, n)
    scores["green"] = np.where(m + a + b > 0, m / np.maximum(m + a + b, 1), 0.0)
    for column, values in (("green_false_finding", a), ("green_missing_finding", b), ("green_matched", m)):
        scores[column] = values
    for column in ("green_wrong_location", "green_wrong_severity", "green_false_comparison",
                   "green_missing_comparison"):
        scores[column] = 0
    scores.to_csv(out / "scores.csv", index=False)
    summary = json.loads((out / "summary.json").read_text())
    summary["green"] = float(scores["green"].mean())
    (out / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"id": scores["id"], "green": scores["green"], "parse_problem": "",
                  "reply": [GREEN_REPLY.format(a=x, b=y, m=z) for x, y, z in zip(a, b, m)]}
                 ).to_csv(out / "green_replies.csv", index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3858)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-report"))
    parser.add_argument("--thumbnail", type=int, default=256)
    parser.add_argument("--reuse", action="store_true", help="Reuse the run in --out/run if it is there.")
    args = parser.parse_args()
    from boxmed_eval.report import build_report, human_size

    run = args.out / "run"
    if not (args.reuse and (run / "summary.json").exists()):
        make_run(run, args.n)
    print(f"run: {run} ({args.n} studies)")
    print("| --images | page | thumbnails beside it | thumbnails | build |")
    print("|---|--:|--:|--:|--:|")
    for mode in ("auto", "embed", "link", "none"):
        started = time.perf_counter()
        result = build_report([run], args.out / f"report-{mode}.html", images=mode, thumbnail=args.thumbnail)
        seconds = time.perf_counter() - started
        beside = human_size(result.image_bytes) if result.files_dir else "-"
        chosen = f" ({result.image_mode})" if mode == "auto" else ""
        print(f"| {mode}{chosen} | {human_size(result.bytes)} | {beside} | {result.n_images} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
