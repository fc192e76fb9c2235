"""Phrase grounding as a task: ``boxmed-eval run --task grounding --model M --dataset ms_cxr``.

**Queries.** Every study's reference boxes are grouped by phrase (``Box.phrase``, e.g. MS-CXR's
``label_text``) and image: one query per (study, phrase), id ``<study id>#<n>`` (n counts the
study's phrases from 0 in file order). A phrase drawn with several boxes (MS-CXR's bilateral
findings) is one query with several reference boxes. Its category is its first box's
``category`` (MS-CXR's ``category_name``). The plugin sees the image, the phrase and the
image size, never the reference boxes or the category.

**Plugins.** A model that can ground implements ``ReportGenerator.ground(queries)`` (batched):
one :class:`GroundingAnswer` per query with its boxes in pixels of the query's image and,
when the model has one, a confidence in ``Box.score``. A model without ``ground()`` is refused
before anything loads.

**Run directory.** As for reports (locked, resumable after a kill, sharded under torchrun /
accelerate launch, rank 0 merges): ``grounding_predictions.jsonl`` holds one record per query
(``id``, ``study_id``, ``phrase``, ``boxes``), appended and fsynced per batch;
``references.jsonl`` the studies with their boxes; ``scores.csv`` one row per query;
``grounding_per_category.csv`` the table; ``run.json`` records ``task: grounding`` (a report run
and a grounding run never resume each other).

**Scores** (:func:`score_queries`), the field's phrase-grounding numbers on MS-CXR:

* a query's IoU: its reference boxes matched to its predicted boxes by the grounding metric's
  rule (``--metric-option grounding.matching=hungarian`` (default) | ``greedy`` | ``union`` |
  ``best``, :mod:`boxmed_eval.metrics.grounding`), averaged over its reference boxes; with
  ``union`` the IoU of the union of its predicted boxes with the union of its reference boxes.
  A query answered with no box scores 0;
* ``pg_miou`` = mean query IoU; ``pg_acc_0.1`` / ``0.3`` / ``0.5`` / ``0.7`` = share of queries
  with IoU >= the threshold ("Acc@IoU"); per query ``pg_iou`` and ``pg_acc_*`` (0/1) in
  scores.csv, so ``compare`` pairs two models query by query;
* ``pg_map_0.5`` = mean over categories of COCO-style AP at IoU 0.5 (:mod:`boxmed_eval.detection`;
  the "images" are the queries, every predicted box counts for its query's category, ranked by
  score; unscored boxes rank in input order);
* the same numbers per category in ``grounding_per_category.csv`` (and the "All" row).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from boxmed_eval.detection import average_precision
from boxmed_eval.errors import BoxmedError, DataError
from boxmed_eval.metrics.base import MetricResult
from boxmed_eval.metrics.grounding import MATCHING_RULES, in_reference_frame, match_boxes
from boxmed_eval.records import Box, Study, iter_jsonl, write_jsonl

if TYPE_CHECKING:
    from boxmed_eval.evaluation import RunConfig
    from boxmed_eval.plugins import ReportGenerator
    from boxmed_eval.runs import RunDirectory

log = logging.getLogger(__name__)

TASKS = ("report", "grounding")
GROUNDING_PREDICTIONS = "grounding_predictions.jsonl"
PER_CATEGORY_TABLE = "grounding_per_category"
THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
AP_THRESHOLD = 0.5
NO_CATEGORY = "(none)"


@dataclass
class GroundingQuery:
    """What a plugin's ``ground()`` gets: locate ``phrase`` on image ``image_index`` of the study."""

    id: str
    study_id: str
    phrase: str
    image_paths: list[str]
    image_index: int = 0
    image_width: int | None = None
    image_height: int | None = None

    @property
    def image_path(self) -> str:
        return self.image_paths[min(self.image_index, len(self.image_paths) - 1)]


@dataclass
class GroundingAnswer:
    """A plugin's answer: boxes in pixels of the query's image (``Box.score`` optional)."""

    id: str
    boxes: list[Box] = field(default_factory=list)

    def to_dict(self, query: GroundingQuery | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id}
        if query is not None:
            data.update(study_id=query.study_id, phrase=query.phrase)
        data["boxes"] = [b.to_dict() for b in self.boxes]
        return data


@dataclass
class PhraseReference:
    """A query with what it is scored against (kept by the harness)."""

    query: GroundingQuery
    category: str
    boxes: list[Box]


def build_queries(studies: Iterable[Study]) -> list[PhraseReference]:
    """One query per (study, phrase, image), in study order then first appearance."""
    out: list[PhraseReference] = []
    for study in studies:
        groups: dict[tuple[str, int], list[Box]] = {}
        for box in study.boxes:
            groups.setdefault((box.phrase.strip(), box.image_index), []).append(box)
        for n, ((phrase, image_index), boxes) in enumerate(groups.items()):
            if not phrase:
                raise DataError("a reference box has no phrase, so it cannot be a grounding query", file="references",
                                record=f"study {study.id}", fix="every box of a grounding dataset names its phrase")
            first = boxes[0]
            query = GroundingQuery(id=f"{study.id}#{n}", study_id=study.id, phrase=phrase,
                                   image_paths=list(study.image_paths), image_index=image_index,
                                   image_width=first.image_width, image_height=first.image_height)
            out.append(PhraseReference(query, first.category or NO_CATEGORY, boxes))
    return out


# ---------------------------------------------------------------------------- records on disk

def shard_path(run_dir: "RunDirectory", rank: int) -> Path:
    return run_dir.path / f"grounding_predictions.rank{rank}.jsonl"


def read_answers(path: Path) -> dict[str, GroundingAnswer]:
    """Answers written so far; a half-written last line (a killed run) is cut off first."""
    from boxmed_eval.runs import _repair_truncated_tail

    if not path.exists():
        return {}
    _repair_truncated_tail(path)
    answers: dict[str, GroundingAnswer] = {}
    for number, obj in iter_jsonl(path):
        if "id" not in obj:
            raise DataError("missing 'id'", file=path, record=f"line {number}",
                            fix='each line is {"id": "<study>#<n>", "boxes": [...]}')
        try:
            boxes = [Box.from_dict(b) for b in obj.get("boxes") or []]
        except (TypeError, ValueError, KeyError) as exc:
            raise DataError(f"invalid boxes ({exc})", file=path, record=f"line {number}",
                            fix="boxes are objects with x1, y1, x2, y2 in pixels") from None
        key = str(obj["id"])
        if key in answers:
            raise DataError(f"duplicate id {key!r}", file=path, record=f"line {number}",
                            fix="each query is answered once; remove the duplicate line")
        answers[key] = GroundingAnswer(key, boxes)
    return answers


def append_answers(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append and fsync (a batch survives kill -9 once this returns)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not text:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def check_task(run_dir: "RunDirectory", task: str, overwrite: bool) -> None:
    """Refuse to resume a run directory of the other task."""
    config = run_dir.read_config()
    if config is None or overwrite:
        return
    existing = config.get("task") or "report"  # runs from before tasks existed are report runs
    if existing != task:
        raise BoxmedError(f"{run_dir.path} holds a {existing} run (run.json task {existing!r}), not a {task} run. "
                          "Use another --out directory, or --overwrite to start it again.")


# ---------------------------------------------------------------------------- the run

def require_ground(model_cls: type["ReportGenerator"], name: str) -> None:
    from boxmed_eval.plugins import MODELS

    if not model_cls.can_ground():
        able = [n for n, c in MODELS.items() if isinstance(c, type) and hasattr(c, "can_ground") and c.can_ground()]
        raise BoxmedError(f"model {name!r} cannot do phrase grounding: it has no ground() method. Models that can: "
                          f"{', '.join(able) or '(none)'}; or implement ReportGenerator.ground(queries) in the plugin")


def run_grounding(config: "RunConfig", run_dir: "RunDirectory") -> tuple["RunDirectory", dict[str, Any]]:
    """``run --task grounding`` inside the run directory's lock (see the module docstring)."""
    from boxmed_eval.datasets import get_dataset
    from boxmed_eval.evaluation import distributed_rank, seed_everything
    from boxmed_eval.plugins import RunContext, get_model_class
    from boxmed_eval.runs import IDENTITY_FIELDS

    rank, world = distributed_rank()
    others = sorted(set(config.metric_options) - {"grounding"})
    if others:
        raise BoxmedError(f"--metric-option {others[0]}.* (or --judge) does not apply to --task grounding; "
                          "it takes grounding.matching only")
    model_cls = get_model_class(config.model)
    require_ground(model_cls, config.model)
    dataset = get_dataset(config.dataset, config.data_root, **config.dataset_options)
    studies = dataset.load(config.split)
    if config.limit is not None:
        studies = studies[: config.limit]
    references = build_queries(studies)
    if not references:
        raise BoxmedError(f"dataset {config.dataset!r} split {config.split!r} has no phrase boxes: phrase grounding "
                          "needs a dataset with boxes (ms_cxr, latte_cxr, demo)")
    identity = {**config.identity(), "task": "grounding", "data_root": str(dataset.data_root)}
    check_task(run_dir, "grounding", config.overwrite)
    if rank == 0:
        run_dir.start({**identity, "batch_size": config.batch_size, "n_studies": len(studies),
                       "n_queries": len(references), "dropped_empty_findings": dataset.dropped_empty,
                       "status": "generating"}, overwrite=config.overwrite, identity=(*IDENTITY_FIELDS, "task"))
        write_jsonl(run_dir.path / "references.jsonl", [s.to_dict() for s in studies])
    else:
        run_dir.path.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    target = run_dir.path / GROUNDING_PREDICTIONS
    done = set(read_answers(target))
    mine = references
    if world > 1:
        target = shard_path(run_dir, rank)
        done |= set(read_answers(target))
        mine = references[rank::world]
    todo = [r for r in mine if r.query.id not in done]
    started = time.perf_counter()
    if todo:
        plugin = model_cls(**config.model_args)
        plugin.setup(RunContext(dataset=dataset, split=config.split, out_dir=run_dir.path, seed=config.seed))
        generate_answers(plugin, todo, target, batch_size=config.batch_size, total=len(mine))
        provenance = plugin.provenance()
    else:
        provenance = None
    seconds = time.perf_counter() - started
    if world > 1:
        if rank != 0:
            return run_dir, {}
        _merge_shards(run_dir, references, world)
    answers = read_answers(run_dir.path / GROUNDING_PREDICTIONS)
    missing = [r.query.id for r in references if r.query.id not in answers]
    if missing:
        raise BoxmedError(f"{len(missing)} grounding queries have no answer after generation (e.g. {missing[:5]})")
    summary = score_run_directory(run_dir, references, answers, config.metric_options.get("grounding", {}))
    config_now = run_dir.read_config() or {}
    timings = dict(config_now.get("timings", {}))
    timings[f"generation_seconds_session{config_now.get('resumed', 0)}"] = round(seconds, 3)
    fields: dict[str, Any] = {"status": "complete", "timings": timings, "generated_this_session": len(todo)}
    if provenance is not None:
        fields["model_provenance"] = provenance
    run_dir.update_config(**fields)
    return run_dir, summary


def generate_answers(plugin: "ReportGenerator", todo: list[PhraseReference], target: Path, *, batch_size: int,
                     total: int) -> None:
    with tqdm(total=total, initial=total - len(todo), desc=f"ground ({plugin.name})", unit="phrase",
              disable=None) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            answers = list(plugin.ground([r.query for r in batch]))
            _check_answers(plugin, [r.query.id for r in batch], answers)
            by_id = {a.id: a for a in answers}
            append_answers(target, [by_id[r.query.id].to_dict(r.query) for r in batch])
            bar.update(len(batch))


def _check_answers(plugin: "ReportGenerator", expected: list[str], answers: list[Any]) -> None:
    """One GroundingAnswer of Box es per query of the batch, same ids: a plugin bug otherwise."""
    if not all(isinstance(a, GroundingAnswer) for a in answers):
        raise BoxmedError(f"model {plugin.name!r}: ground() must return GroundingAnswer objects")
    got = [a.id for a in answers]
    if sorted(got) != sorted(expected):
        raise BoxmedError(f"model {plugin.name!r} answered the wrong grounding queries (missing "
                          f"{sorted(set(expected) - set(got))[:5]}, unexpected {sorted(set(got) - set(expected))[:5]}, "
                          f"{len(got)} answers for {len(expected)} queries)")
    for answer in answers:
        if not all(isinstance(b, Box) for b in answer.boxes):
            raise BoxmedError(f"model {plugin.name!r} returned a non-Box for query {answer.id!r}")


def _merge_shards(run_dir: "RunDirectory", references: list[PhraseReference], world: int,
                  timeout_s: float = 86400) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        have = read_answers(run_dir.path / GROUNDING_PREDICTIONS)
        for r in range(world):
            for key, answer in read_answers(shard_path(run_dir, r)).items():
                have.setdefault(key, answer)
        if all(ref.query.id in have for ref in references):
            break
        if time.monotonic() > deadline:
            raise BoxmedError("timed out waiting for the other ranks' grounding answers")
        time.sleep(2)
    write_jsonl(run_dir.path / GROUNDING_PREDICTIONS, [have[r.query.id].to_dict(r.query) for r in references])
    for r in range(world):
        shard_path(run_dir, r).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- scoring

def score_queries(references: list[PhraseReference], answers: dict[str, GroundingAnswer],
                  matching: str = "hungarian") -> MetricResult:
    """The phrase-grounding numbers (module docstring) as a ``MetricResult`` keyed by query id."""
    if matching not in MATCHING_RULES:
        raise BoxmedError(f"unknown grounding matching rule {matching!r}; choose one of {', '.join(MATCHING_RULES)}")
    result = MetricResult(conventions={
        "task": "grounding", "grounding_matching": matching,
        "grounding_query": "one (study, phrase); IoU averaged over its reference boxes"
                           + (" (union: IoU of the unions)" if matching == "union" else ""),
        "grounding_coordinates": "pixels of the original image"})
    ious: dict[str, float] = {}
    refs_ap: list[tuple[str, str, Box]] = []
    dets_ap: list[tuple[str, str, Box]] = []
    for ref in references:
        qid = ref.query.id
        predicted = answers[qid].boxes if qid in answers else []
        # the query fixes the image: a box's own image_index does not move it elsewhere
        predicted = [in_reference_frame(Box(**{**b.to_dict(), "image_index": ref.query.image_index}), ref.boxes[0])
                     for b in predicted]
        per_box = match_boxes(ref.boxes, predicted, matching)
        ious[qid] = float(np.mean(per_box))
        refs_ap += [(qid, ref.category, b) for b in ref.boxes]
        dets_ap += [(qid, ref.category, b) for b in predicted]
    ids = [r.query.id for r in references]
    values = np.array([ious[i] for i in ids])
    result.corpus["pg_miou"] = float(values.mean())
    for t in THRESHOLDS:
        result.corpus[f"pg_acc_{t}"] = float((values >= t).mean())
    ap = average_precision(refs_ap, dets_ap, iou_threshold=AP_THRESHOLD, images=ids)
    result.corpus["pg_map_0.5"] = ap.mean
    result.per_sample["pg_iou"] = dict(ious)
    for t in THRESHOLDS:
        result.per_sample[f"pg_acc_{t}"] = {i: float(ious[i] >= t) for i in ids}
    rows = []
    categories = sorted({r.category for r in references})
    for category in [*categories, "All"]:
        chosen = [r.query.id for r in references if category in ("All", r.category)]
        vals = np.array([ious[i] for i in chosen])
        row: dict[str, Any] = {"category": category, "n": len(chosen), "miou": float(vals.mean())}
        row.update({f"acc_{t}": float((vals >= t).mean()) for t in THRESHOLDS})
        row["ap_0.5"] = ap.mean if category == "All" else ap.per_class.get(category, math.nan)
        rows.append(row)
    result.tables[PER_CATEGORY_TABLE] = pd.DataFrame(rows)
    scored = [b.score is not None for _, _, b in dets_ap]
    result.conventions["grounding_ap_scored"] = ("all boxes scored" if scored and all(scored) else
                                                 "no box scores: ranked in input order" if not any(scored) else
                                                 "some boxes scored (the others count as 1.0)")
    return result


def score_run_directory(run_dir: "RunDirectory", references: list[PhraseReference],
                        answers: dict[str, GroundingAnswer], options: dict[str, Any]) -> dict[str, Any]:
    """Score and write scores.csv / summary.json / grounding_per_category.csv."""
    unknown = sorted(set(options) - {"matching", "cache_dir", "dataset"})
    if unknown:
        raise BoxmedError(f"--metric-option grounding.{unknown[0]}: the grounding task takes only grounding.matching "
                          f"({', '.join(MATCHING_RULES)})")
    started = time.perf_counter()
    result = score_queries(references, answers, str(options.get("matching", "hungarian")))
    no_box = sum(1 for r in references if not answers[r.query.id].boxes)
    extra = {"n_studies": len({r.query.study_id for r in references}), "n_queries": len(references),
             "n_queries_without_box": no_box,
             "scoring_seconds": round(time.perf_counter() - started, 3)}
    summary = run_dir.write_results(result, [r.query.id for r in references], extra_summary=extra)
    return summary


def rescore(run_dir: "RunDirectory", options: dict[str, Any]) -> dict[str, Any]:
    """``score --run DIR`` on a grounding run (e.g. another ``grounding.matching``)."""
    from boxmed_eval.runs import read_run_references

    studies = read_run_references(run_dir.path / "references.jsonl")
    references = build_queries(studies.values())
    answers = read_answers(run_dir.path / GROUNDING_PREDICTIONS)
    missing = [r.query.id for r in references if r.query.id not in answers]
    if missing:
        raise DataError(f"{len(missing)} queries have no answer (e.g. {missing[:5]})",
                        file=run_dir.path / GROUNDING_PREDICTIONS, fix="finish the run (re-run the same command)")
    return score_run_directory(run_dir, references, answers, options)


def grounding_table(runs: list[Any], digits: int = 3) -> Any:
    """The grounding table: one run -> a row per category (and All); several runs -> their
    All rows, one per run. ``runs`` are :class:`boxmed_eval.rundata.RunData`."""
    from boxmed_eval.tables import Cell, Table, format_number

    headers = ["Category" if len(runs) == 1 else "Run", "N", "mIoU", *(f"Acc@{t}" for t in THRESHOLDS), "AP@0.5"]
    columns = ["n", "miou", *(f"acc_{t}" for t in THRESHOLDS), "ap_0.5"]
    rows = []
    for run in runs:
        path = run.path / f"{PER_CATEGORY_TABLE}.csv"
        if not path.is_file():
            raise DataError("not a grounding run (no grounding_per_category.csv)", file=path,
                            fix="run `boxmed-eval run --task grounding ...` (or `score --run DIR` on one)")
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        chosen = frame if len(runs) == 1 else frame[frame["category"] == "All"]
        for _, record in chosen.iterrows():
            label = str(record["category"]) if len(runs) == 1 else run.name
            cells = [Cell(label, label), Cell(str(int(record["n"])), float(record["n"]))]
            cells += [Cell(format_number(float(record[c]), digits), float(record[c])) for c in columns[1:]]
            rows.append(cells)
    matching = runs[0].conventions.get("grounding_matching", "hungarian") if runs else "hungarian"
    caption = (f"Phrase grounding ({runs[0].name})." if len(runs) == 1 else "Phrase grounding.")
    notes = [f"IoU per (study, phrase) query, boxes matched by {matching}; Acc@t = share of queries with IoU >= t; "
             "AP@0.5 COCO-style (101 recall points) per category, All = their mean."]
    return Table(headers, [(None, rows)], caption=caption, notes=notes, latex_label="tab:grounding",
                 csv_headers=["category" if len(runs) == 1 else "run", *columns])


# ---------------------------------------------------------------------------- imported predictions

def _size_of(obj: dict[str, Any], fallback: Box | None) -> tuple[Any, Any]:
    width = obj.get("image_width") or (fallback.image_width if fallback else None)
    height = obj.get("image_height") or (fallback.image_height if fallback else None)
    return width, height


def _import_boxes(items: Any, fmt: str, width: Any, height: Any, *, path: Path, where: str) -> list[Box]:
    from boxmed_eval.boxes import box_from_record

    if items is None:
        return []
    if not isinstance(items, list):
        raise DataError("'boxes' must be a list", file=path, record=where, fix="write boxes as a JSON list")
    out = []
    for n, item in enumerate(items):
        try:
            out.append(box_from_record(item, fmt, width, height))
        except ValueError as exc:
            fix = ("add image_width and image_height to the record (or to each box)" if "needed" in str(exc)
                   else f"boxes are in --box-format {fmt}: see `boxmed-eval score --help`")
            raise DataError(f"box {n}: {exc}", file=path, record=where, fix=fix) from None
    return out


def read_reference_boxes(path: Path) -> dict[str, list[Box]]:
    """``{id: boxes}`` of a JSONL reference file whose records carry ``boxes`` in the harness's
    format (pixels ``x1,y1,x2,y2`` with phrase, category, image size: ``references.jsonl``)."""
    out: dict[str, list[Box]] = {}
    if path.suffix.lower() != ".jsonl":
        return out
    for number, obj in iter_jsonl(path):
        if obj.get("boxes") and "id" in obj:
            out[str(obj["id"])] = _import_boxes(obj["boxes"], "xyxy", None, None, path=path, where=f"line {number}")
    return out


def import_report_boxes(path: Path, fmt: str, studies: dict[str, Study]) -> dict[str, list[Box]]:
    """The ``boxes`` of a JSONL prediction file (``score --pred``), converted from ``fmt`` to pixels;
    a normalised format takes the image size from the record, else from the study's boxes."""
    out: dict[str, list[Box]] = {}
    if path.suffix.lower() != ".jsonl":
        return out
    for number, obj in iter_jsonl(path):
        if "boxes" not in obj or "id" not in obj:
            continue
        study = studies.get(str(obj["id"]))
        width, height = _size_of(obj, study.boxes[0] if study and study.boxes else None)
        out[str(obj["id"])] = _import_boxes(obj["boxes"], fmt, width, height, path=path,
                                            where=f"line {number} (id {obj['id']})")
    return out


def import_grounding_answers(path: Path, fmt: str, references: list[PhraseReference]) -> dict[str, GroundingAnswer]:
    """Grounding answers of a JSONL file: each record names its query by ``id`` (``<study>#<n>``)
    or by ``study_id`` + ``phrase``, with ``boxes`` in convention ``fmt``."""
    by_id = {r.query.id: r for r in references}
    by_phrase = {(r.query.study_id, r.query.phrase.lower()): r for r in references}
    answers: dict[str, GroundingAnswer] = {}
    for number, obj in iter_jsonl(path):
        where = f"line {number}"
        ref = by_id.get(str(obj.get("id"))) if "id" in obj else None
        if ref is None and "study_id" in obj and "phrase" in obj:
            from boxmed_eval.text import prepare_findings

            ref = by_phrase.get((str(obj["study_id"]), prepare_findings(str(obj["phrase"])).strip().lower()))
        if ref is None:
            raise DataError(f"no reference phrase for this record (id {obj.get('id')!r}, study_id {obj.get('study_id')!r},"
                            f" phrase {obj.get('phrase')!r})", file=path, record=where,
                            fix="name the query by 'id' (<study id>#<n>, as in grounding_predictions.jsonl) or by "
                                "'study_id' and the reference 'phrase'")
        if ref.query.id in answers:
            raise DataError(f"query {ref.query.id!r} is answered twice", file=path, record=where,
                            fix="one record per (study, phrase)")
        width, height = _size_of(obj, ref.boxes[0])
        boxes = _import_boxes(obj.get("boxes"), fmt, width, height, path=path, where=f"{where} (query {ref.query.id})")
        answers[ref.query.id] = GroundingAnswer(ref.query.id, boxes)
    missing = [r.query.id for r in references if r.query.id not in answers]
    if missing:
        raise DataError(f"{len(missing)} reference phrases have no answer (e.g. {', '.join(missing[:5])})", file=path,
                        fix="answer every (study, phrase) of the references (an empty 'boxes' list scores 0)")
    return answers
