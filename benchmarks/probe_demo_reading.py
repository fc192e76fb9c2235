"""Does the `small` preset's language model learn to read the demo images? (issue 16, demo/val only)

A fast stand-in for the adapter stage: a plain torch loop of full-model SFT on (report prompt ->
findings) rows of demo/train from the random `small` base, 8 rows a step, cosine lr, one thread;
every --eval-every steps it decodes the 60 demo/val studies greedily and prints CheXpert micro F1
(rules labeler), the number of distinct reports, the teacher-forced loss of 24 val studies with
their own vs a shuffled image, and the mean norm of the visual tokens. --vision picks what the
vision tower does: train (end to end), frozen (random weights kept), lowlr (--vmult x lr);
--pretrain N first trains it N steps x 32 images on the train studies' 14 CheXpert labels
(the dataset's labels) through a linear head, as boxmed_model/vision_pretrain.py does.

    python benchmarks/probe_demo_reading.py --vision frozen --pretrain 150 --steps 900 --eval-every 300

Results: boxmed_model/DEMO_RESULTS.md ("Why the reports ignored the image").
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=600)
parser.add_argument("--bs", type=int, default=8)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--vision", default="train")  # train | frozen | lowlr
parser.add_argument("--vmult", type=float, default=0.1)
parser.add_argument("--pretrain", type=int, default=0)
parser.add_argument("--eval-every", type=int, default=200)
parser.add_argument("--tag", default="x")
args = parser.parse_args()
torch.set_num_threads(1); torch.manual_seed(0)
from transformers import AutoModelForImageTextToText
from boxmed_eval.datasets import get_dataset
from boxmed_eval.records import CHEXPERT_CLASSES
from boxmed_eval.text import normalize_text
from boxmed_model.data import load_image
from boxmed_model.tiny import load_processor, resolve_base
from boxmed_model import prompts
from boxmed_eval.metrics.labelers import get_labeler
from boxmed_eval.metrics.chexpert import binarize
base = resolve_base("small"); proc = load_processor(base)
model = AutoModelForImageTextToText.from_pretrained(base, local_files_only=True)
visual = model.model.visual
ad = get_dataset("demo")
def enc(split):
    st = ad.load(split); imgs = [load_image(s.image_paths[0], 0.5)[0] for s in st]
    return st, imgs
tr, trimg = enc("train"); va, vaimg = enc("val")
tok = proc.tokenizer
prompt_text = proc.apply_chat_template(prompts.report_messages(), add_generation_prompt=True, tokenize=False)
def build(st, imgs):
    rows = []
    for s, im in zip(st, imgs):
        b = proc(text=[prompt_text], images=[im], return_tensors="pt")
        tgt = tok(normalize_text(s.findings) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((b["input_ids"][0], b["pixel_values"], b["image_grid_thw"], torch.tensor(tgt), b["mm_token_type_ids"][0]))
    return rows
t0 = time.time(); R = build(tr, trimg); V = build(va, vaimg)
print("built", len(R), "prompt len", len(R[0][0]), "tgt len", np.mean([len(r[3]) for r in R]), f"{time.time()-t0:.0f}s", flush=True)
labels = torch.tensor([[1.0 if s.labels and s.labels.get(c) == 1 else 0.0 for c in CHEXPERT_CLASSES] for s in tr])
if args.pretrain:  # the pipeline's own loop (boxmed_model/vision_pretrain.py), on the dataset's labels
    from boxmed_model.vision_pretrain import train_vision_tower

    losses = train_vision_tower(visual, torch.stack([r[1] for r in R]), torch.cat([r[2] for r in R]), labels,
                                steps=args.pretrain, batch_size=32, learning_rate=1e-3, seed=1)
    print("pretrain loss", losses[-1], f"{time.time()-t0:.0f}s", flush=True)
vp = list(visual.parameters()); vids = {id(x) for x in vp}
lp = [x for x in model.parameters() if id(x) not in vids]
groups = [{"params": lp, "lr": args.lr}]
if args.vision == "frozen":
    for x in vp: x.requires_grad = False
elif args.vision == "lowlr":
    groups.append({"params": vp, "lr": args.lr * args.vmult})
else:
    groups.append({"params": vp, "lr": args.lr})
opt = torch.optim.AdamW(groups, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 20) * 0.5 * (1 + np.cos(np.pi * min(s, args.steps) / args.steps)))
pad = tok.pad_token_id
def batch(rows):
    seqs = [torch.cat([r[0], r[3]]) for r in rows]; L = max(len(s) for s in seqs)
    ids = torch.full((len(rows), L), pad); lab = torch.full((len(rows), L), -100); att = torch.zeros((len(rows), L), dtype=torch.long)
    mm = torch.zeros((len(rows), L), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        ids[i, :len(s)] = s; att[i, :len(s)] = 1; lab[i, len(r[0]):len(s)] = r[3]; mm[i, :len(r[0])] = r[4]
    return ids, att, lab, torch.cat([r[1] for r in rows]), torch.cat([r[2] for r in rows]), mm
labeler = get_labeler("rules")
truth = binarize(labeler.label([s.findings for s in va]), uncertain_positive=False)
def evaluate(step):
    model.eval(); outs = []
    tok.padding_side = "left"
    with torch.no_grad():
        for i in range(0, len(V), 20):
            rows = V[i:i+20]; L = max(len(r[0]) for r in rows)
            ids = torch.full((len(rows), L), pad); att = torch.zeros((len(rows), L), dtype=torch.long)
            mm = torch.zeros((len(rows), L), dtype=torch.long)
            for j, r in enumerate(rows): ids[j, L-len(r[0]):] = r[0]; att[j, L-len(r[0]):] = 1; mm[j, L-len(r[0]):] = r[4]
            g = model.generate(input_ids=ids, attention_mask=att, mm_token_type_ids=mm, pixel_values=torch.cat([r[1] for r in rows]),
                               image_grid_thw=torch.cat([r[2] for r in rows]), max_new_tokens=90, do_sample=False)
            outs += tok.batch_decode(g[:, L:], skip_special_tokens=True)
    pred = binarize(labeler.label(outs), uncertain_positive=False)
    tp = (pred * truth).sum(); f1 = 2 * tp / max(1, pred.sum() + truth.sum())
    # own vs shuffled image loss
    with torch.no_grad():
        rows = V[:24]; ids, att, lab, px, g, mm = batch(rows)
        l_own = model(input_ids=ids, attention_mask=att, labels=lab, pixel_values=px, image_grid_thw=g, mm_token_type_ids=mm).loss.item()
        perm = list(range(1, 24)) + [0]
        px2 = torch.cat([rows[k][1] for k in perm])
        l_sh = model(input_ids=ids, attention_mask=att, labels=lab, pixel_values=px2, image_grid_thw=g, mm_token_type_ids=mm).loss.item()
        vn = visual(R[0][1], grid_thw=R[0][2]).pooler_output.norm(dim=-1).mean().item()
    print(json.dumps({"tag": args.tag, "step": step, "val_f1": round(float(f1), 4), "distinct": len(set(outs)),
                      "own": round(l_own, 4), "shuf": round(l_sh, 4), "vnorm": round(vn, 1), "t": round(time.time() - t0)}), flush=True)
    model.train()
rng = np.random.default_rng(0); model.train(); order = []
for step in range(1, args.steps + 1):
    if len(order) < args.bs: order += list(rng.permutation(len(R)))
    idx, order = order[:args.bs], order[args.bs:]
    ids, att, lab, px, g, mm = batch([R[i] for i in idx])
    loss = model(input_ids=ids, attention_mask=att, labels=lab, pixel_values=px, image_grid_thw=g, mm_token_type_ids=mm).loss
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    if step % 50 == 0: print(args.tag, step, round(loss.item(), 4), f"{time.time()-t0:.0f}s", flush=True)
    if step % args.eval_every == 0 or step == args.steps: evaluate(step)
