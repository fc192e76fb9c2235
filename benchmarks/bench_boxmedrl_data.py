"""Memory and start-up of BoxMed-RL's training data at MIMIC-CXR scale (issue 10, part 1).

Writes a synthetic MIMIC-CXR set in the R2Gen layout (``annotation.json`` + ``images/`` of
768x768 JPEGs, read by ``boxmed_eval.datasets.mimic_cxr``) at each ``--sizes`` (default
1,000 and 6,000 training studies), then, in a fresh process per size, loads it with the
``mimic`` dataset adapter and runs the adapter stage exactly as ``boxmed-eval train`` does
(``boxmed_model.train.run_adapter``: lazy rows -> ``datasets`` transform -> TRL SFTTrainer) for
one optimizer step on the ``tiny`` preset. Reported per size: peak RSS (VmHWM) growth over
the process's RSS after imports, and seconds from the stage start to its first optimizer
step being done. ``--eager N`` also measures the old eager way (decode + resize every image
into a Python list, then ``Dataset.from_list``) on N studies, as a per-study reference.

    python benchmarks/bench_boxmedrl_data.py --work /tmp/bench_data            # 1000 and 6000
    python benchmarks/bench_boxmedrl_data.py --sizes 500,2000 --eager 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIDE = 768


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def write_set(root: Path, n: int) -> Path:
    """R2Gen-layout MIMIC set of ``n`` train studies (+1 val, +1 test); reused when complete."""
    import numpy as np
    from PIL import Image

    annotation = root / "annotation.json"
    if annotation.is_file() and len(json.loads(annotation.read_text())["train"]) == n:
        return root
    rng = np.random.default_rng(0)
    ramp = np.linspace(30, 200, SIDE, dtype=np.float32)[None, :].repeat(SIDE, 0)
    entries = {"train": [], "val": [], "test": []}
    for i in range(n + 2):
        split = "train" if i < n else ("val" if i == n else "test")
        rel = f"p1{i % 10}/p1{i:07d}/s5{i:07d}/{i:08x}.jpg"
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            pixels = ramp + rng.normal(0, 12, (SIDE, SIDE)).astype(np.float32)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(path, quality=90)
        report = ("The heart size is normal. There is a small left pleural effusion. "
                  f"No pneumothorax. Study {i} shows mild bibasilar atelectasis.")
        entries[split].append({"id": f"{i:08x}", "study_id": 50000000 + i, "subject_id": 10000000 + i,
                               "report": report, "image_path": [rel], "split": split})
    annotation.write_text(json.dumps(entries))
    return root


def measure(root: Path, base: str, out: Path) -> dict[str, float]:
    """One size, in this (fresh) process: the adapter stage for one step, as training runs it."""
    from boxmed_eval.datasets.base import get_dataset
    from boxmed_model import train  # noqa: F401  (imports torch/transformers/trl before the baseline)
    from boxmed_model.config import AdapterConfig, PipelineConfig

    import trl  # noqa: F401

    rss0 = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    studies = get_dataset("mimic", str(root)).load("train")
    t_load = time.perf_counter() - t0
    cfg = PipelineConfig(adapter=AdapterConfig(max_steps=1), save_steps=1000, logging_steps=1)
    t1 = time.perf_counter()
    train.run_adapter(base, studies, cfg, out)
    t_step = time.perf_counter() - t1
    return {"studies": len(studies), "rss_after_imports_mb": rss0, "peak_rss_mb": _rss_mb("VmHWM"),
            "peak_growth_mb": _rss_mb("VmHWM") - rss0, "load_studies_s": t_load, "first_step_s": t_step}


def measure_eager(root: Path, n: int) -> dict[str, float]:
    """The pre-streaming way on ``n`` studies: every image decoded into a list + Dataset.from_list."""
    from datasets import Dataset

    from boxmed_eval.datasets.base import get_dataset
    from boxmed_model.data import load_image

    studies = get_dataset("mimic", str(root)).load("train")[:n]
    rss0 = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    rows = [{"id": s.id, "images": [load_image(s.image_paths[0], 0.25)[0]]} for s in studies]
    Dataset.from_list(rows)
    seconds = time.perf_counter() - t0
    growth = _rss_mb("VmHWM") - rss0
    return {"studies": n, "peak_growth_mb": growth, "seconds": seconds,
            "mb_per_study": growth / n, "s_per_study": seconds / n}


def _child(args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,6000", help="comma-separated numbers of training studies")
    parser.add_argument("--work", default="/tmp/bench_boxmedrl_data", help="where the synthetic sets go")
    parser.add_argument("--eager", type=int, default=0, help="also measure the old eager build on N studies")
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "BASE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--child-eager", nargs=2, metavar=("ROOT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], Path(args.child[2]))))
        return
    if args.child_eager:
        print(json.dumps(measure_eager(Path(args.child_eager[0]), int(args.child_eager[1]))))
        return

    from boxmed_model.tiny import build_tiny_base

    work = Path(args.work)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = str(build_tiny_base(work / "tiny", ["The heart size is normal. No pneumothorax."]))
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        root = write_set(work / f"mimic_{n}", n)
        print(f"[{n}] synthetic set ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out = work / f"run_{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        results.append(_child(["--child", str(root), base, str(out)]))
        print(f"[{n}] {json.dumps(results[-1])}", file=sys.stderr)
    print("| studies | peak RSS growth (MB) | load studies (s) | stage start -> 1st step done (s) |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['studies']} | {r['peak_growth_mb']:.0f} | {r['load_studies_s']:.1f} | {r['first_step_s']:.1f} |")
    if len(results) >= 2:
        print(f"\ngrowth {results[0]['studies']} -> {results[-1]['studies']} studies: "
              f"{results[-1]['peak_growth_mb'] - results[0]['peak_growth_mb']:+.0f} MB peak RSS, "
              f"{results[-1]['first_step_s'] - results[0]['first_step_s']:+.1f} s to the first step")
    if args.eager:
        eager = _child(["--child-eager", str(work / f"mimic_{sizes[0]}"), str(args.eager)])
        print(f"\nold eager build on {eager['studies']} studies: {eager['mb_per_study']:.3f} MB and "
              f"{eager['s_per_study'] * 1000:.1f} ms per study ({eager['peak_growth_mb']:.0f} MB, "
              f"{eager['seconds']:.1f} s); at {sizes[-1]}: ~{eager['mb_per_study'] * sizes[-1]:.0f} MB, "
              f"~{eager['s_per_study'] * sizes[-1]:.0f} s before step 1")


if __name__ == "__main__":
    main()
