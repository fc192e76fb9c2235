"""Phrase grounding as a task: queries from MS-CXR-format fixtures, the scores worked out by hand,
`run --task grounding` with retrieval and BoxMed-RL on demo and MS-CXR fixtures (table, resume,
refusals), and imported answers in every box convention."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from boxmed_eval.boxes import from_pixel_box
from boxmed_eval.cli import main
from boxmed_eval.datasets import get_dataset
from boxmed_eval.phrase_grounding import GroundingAnswer, build_queries, score_queries
from boxmed_eval.records import Box
from tests.test_dataset_ms_cxr import DICOM_A, DICOM_B
from tests.test_dataset_ms_cxr import mimic_root  # noqa: F401  (the MS-CXR fixture folder, shared)


def B(x1: float, y1: float, x2: float, y2: float, **kw: object) -> Box:
    return Box(float(x1), float(y1), float(x2), float(y2), **kw)  # type: ignore[arg-type]


def test_queries_one_per_study_and_phrase(mimic_root: Path) -> None:
    studies = get_dataset("ms_cxr", mimic_root).load("test")
    refs = build_queries(studies)
    assert [(r.query.id, r.query.phrase, r.category, len(r.boxes)) for r in refs] == [
        (f"{DICOM_A}#0", "small left pleural effusion", "Pleural Effusion", 1),
        (f"{DICOM_A}#1", "bilateral opacities", "Lung Opacity", 2),  # two rows of one phrase: one query
        (f"{DICOM_B}#0", "Moderate cardiomegaly.", "Cardiomegaly", 1)]
    assert (refs[0].query.image_width, refs[0].query.image_height) == (400, 500)
    assert not hasattr(refs[0].query, "boxes")  # the plugin never sees the reference boxes


def _hand_answers() -> dict[str, GroundingAnswer]:
    return {f"{DICOM_A}#0": GroundingAnswer(f"{DICOM_A}#0", [B(200, 300, 280, 360)]),  # exact: IoU 1
            # one of the two boxes exactly: per-box IoUs 1 and 0
            f"{DICOM_A}#1": GroundingAnswer(f"{DICOM_A}#1", [B(20, 100, 120, 250)]),
            # the left half of (100,200)-(280,320): IoU 90*120 / (180*120) = 0.5
            f"{DICOM_B}#0": GroundingAnswer(f"{DICOM_B}#0", [B(100, 200, 190, 320)])}


def test_scores_worked_out_by_hand(mimic_root: Path) -> None:
    refs = build_queries(get_dataset("ms_cxr", mimic_root).load("test"))
    result = score_queries(refs, _hand_answers())
    # query IoUs 1, (1 + 0) / 2, 0.5
    assert result.per_sample["pg_iou"] == pytest.approx({f"{DICOM_A}#0": 1.0, f"{DICOM_A}#1": 0.5, f"{DICOM_B}#0": 0.5})
    assert result.corpus["pg_miou"] == pytest.approx(2 / 3)
    assert result.corpus["pg_acc_0.1"] == result.corpus["pg_acc_0.3"] == result.corpus["pg_acc_0.5"] == 1.0
    assert result.corpus["pg_acc_0.7"] == pytest.approx(1 / 3)
    assert result.per_sample["pg_acc_0.7"][f"{DICOM_A}#1"] == 0.0
    # AP@0.5: effusion and cardiomegaly one TP each (AP 1); opacities: one TP for two references
    # (precision 1 up to recall 0.5: 51 of 101 recall points) -> 51/101
    table = result.tables["grounding_per_category"].set_index("category")
    assert table.loc["Lung Opacity", "ap_0.5"] == pytest.approx(51 / 101)
    assert table.loc["Cardiomegaly", "ap_0.5"] == pytest.approx(1.0) and table.loc["Cardiomegaly", "miou"] == pytest.approx(0.5)
    assert result.corpus["pg_map_0.5"] == pytest.approx((2 + 51 / 101) / 3)
    assert table.loc["All", "n"] == 3 and table.loc["All", "miou"] == pytest.approx(2 / 3)
    # union: the bilateral query is 15000 px of prediction inside a 15000 + 16800 px union of references
    union = score_queries(refs, _hand_answers(), "union")
    assert union.per_sample["pg_iou"][f"{DICOM_A}#1"] == pytest.approx(15000 / 31800)
    # a query without an answer box scores 0
    empty = score_queries(refs, {**_hand_answers(), f"{DICOM_B}#0": GroundingAnswer(f"{DICOM_B}#0", [])})
    assert empty.per_sample["pg_iou"][f"{DICOM_B}#0"] == 0.0
    assert result.conventions["grounding_ap_scored"].startswith("no box scores")


def _cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_retrieval_grounding_run_on_demo_resumes_and_refuses(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = _cli("run", "--task", "grounding", "--model", "retrieval", "--dataset", "demo", "--limit", "8",
                  "--model-arg", "max_train=40", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "| Category | N | mIoU | Acc@0.1 | Acc@0.3 | Acc@0.5 | Acc@0.7 | AP@0.5 |" in result.output
    assert "| All |" in result.output
    lines = (out / "grounding_predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    summary = json.loads((out / "summary.json").read_text())
    scores = (out / "scores.csv").read_text().splitlines()
    assert summary["n_queries"] == len(records) == len(scores) - 1 and summary["n_studies"] <= 8
    assert scores[0] == "id,pg_iou,pg_acc_0.1,pg_acc_0.3,pg_acc_0.5,pg_acc_0.7"
    assert all("#" in r["id"] and r["phrase"] for r in records)
    assert all(b["score"] >= 0 for r in records for b in r["boxes"])
    # kill -9 mid-write: a half line; the rerun cuts it, answers only the rest, same file
    (out / "grounding_predictions.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    again = _cli("run", "--task", "grounding", "--model", "retrieval", "--dataset", "demo", "--limit", "8",
                 "--model-arg", "max_train=40", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert (out / "grounding_predictions.jsonl").read_text().splitlines() == lines
    assert json.loads((out / "run.json").read_text())["generated_this_session"] == len(lines) - 2
    assert json.loads((out / "summary.json").read_text())["pg_miou"] == summary["pg_miou"]
    # a report run into a grounding directory, a model without ground(): refused with the reason
    report = CliRunner().invoke(main, ["run", "--model", "retrieval", "--dataset", "demo", "--out", str(out)])
    assert report.exit_code == 2 and "holds a grounding run" in report.output
    refused = CliRunner().invoke(main, ["run", "--task", "grounding", "--model", "predictions", "--model-arg",
                                        "path=x.jsonl", "--dataset", "demo", "--out", str(tmp_path / "p")])
    assert refused.exit_code == 2 and "cannot do phrase grounding: it has no ground() method" in refused.output
    assert "retrieval" in refused.output
    # score --run re-scores with another matching; the table command renders it
    union = _cli("score", "--run", str(out), "--metric-option", "grounding.matching=union")
    assert union.exit_code == 0 and "matched by union" in union.output
    assert json.loads((out / "summary.json").read_text())["conventions"]["grounding_matching"] == "union"
    wrong = CliRunner().invoke(main, ["score", "--run", str(out), "--metrics", "nlg"])
    assert wrong.exit_code == 2 and "do not apply to phrase grounding" in wrong.output
    wrong = CliRunner().invoke(main, ["run", "--task", "grounding", "--model", "retrieval", "--dataset", "demo",
                                      "--limit", "8", "--out", str(out), "--metric-option", "nlg.preprocess=none"])
    assert wrong.exit_code == 2 and "does not apply to --task grounding" in wrong.output
    table = _cli("grounding-table", str(out), str(out), "--format", "csv")
    assert table.exit_code == 0 and table.output.splitlines()[0].startswith("run,n,miou")


def test_retrieval_grounding_on_ms_cxr_fixture(mimic_root: Path, tmp_path: Path) -> None:
    # the only training image (DICOM_C, 300x300) has one phrase sharing no word with the queries:
    # every query gets its box (10,20)-(40,60) rescaled to the query image, with score 0
    result = _cli("run", "--task", "grounding", "--model", "retrieval", "--dataset", "ms_cxr", "--data-root",
                  str(mimic_root), "--out", str(tmp_path / "m"))
    assert result.exit_code == 0, result.output
    records = {json.loads(line)["id"]: json.loads(line)
               for line in (tmp_path / "m" / "grounding_predictions.jsonl").read_text().splitlines()}
    box = records[f"{DICOM_A}#0"]["boxes"][0]
    assert (box["x1"], box["y1"], box["x2"], box["y2"]) == pytest.approx((10 * 4 / 3, 20 * 5 / 3, 40 * 4 / 3, 60 * 5 / 3))
    assert box["score"] == 0.0 and box["phrase"] == "right lower lobe pneumonia"
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["n_queries"] == 3 and summary["pg_miou"] == 0.0 and summary["pg_map_0.5"] == 0.0


def test_imported_answers_in_every_box_format_score_the_same(mimic_root: Path, tmp_path: Path) -> None:
    studies = get_dataset("ms_cxr", mimic_root).load("test")
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in studies))
    refs = {r.query.id: r for r in build_queries(studies)}
    answers = _hand_answers()
    results = {}
    for fmt in ("xyxy", "xywh", "norm", "qwen"):
        rows = []
        for qid, answer in answers.items():
            ref = refs[qid]
            w, h = ref.query.image_width, ref.query.image_height
            boxes = [list(from_pixel_box(b, fmt, w, h)) for b in answer.boxes]
            # name half of the queries by study id + phrase, the others by id
            key = {"id": qid} if qid.endswith("#0") else {"study_id": ref.query.study_id, "phrase": ref.query.phrase}
            rows.append({**key, "boxes": boxes})
        (tmp_path / f"{fmt}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / f"out_{fmt}"
        result = _cli("score", "--task", "grounding", "--pred", str(tmp_path / f"{fmt}.jsonl"), "--ref",
                      str(tmp_path / "refs.jsonl"), "--box-format", fmt, "--out", str(out))
        assert result.exit_code == 0, result.output
        results[fmt] = json.loads((out / "summary.json").read_text())
    for fmt in ("xywh", "norm"):
        assert results[fmt]["pg_miou"] == pytest.approx(2 / 3)
    # Qwen's integer 0..1000 grid moves the boxes a little
    assert abs(results["qwen"]["pg_miou"] - 2 / 3) < 0.01
    # a normalised format without an image size anywhere is a clear error
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": f"{DICOM_A}#0", "boxes": [[1, 2, 3]]}) + "\n")
    bad = CliRunner().invoke(main, ["score", "--task", "grounding", "--pred", str(tmp_path / "bad.jsonl"), "--ref",
                                    str(tmp_path / "refs.jsonl"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "bad.jsonl: line 1" in bad.output and "four finite numbers" in bad.output


def test_score_pred_report_task_reads_boxes_in_the_given_format(mimic_root: Path, tmp_path: Path) -> None:
    studies = get_dataset("ms_cxr", mimic_root).load("test")
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in studies))
    # MAIRA-2 bins on DICOM_B (320x360: square side 320, y offset 20): (31,50,59,83) decodes to
    # x1 = int(31.5 / 100 * 320) = 100, y1 = int(50.5 * 3.2 + 20) = 181, x2 = int(59.5 * 3.2) = 190, y2 = 287
    preds = [{"id": DICOM_A, "report": "r", "boxes": ["<box><x50><y60><x70><y72></box>"]},
             {"id": DICOM_B, "report": "r", "boxes": [[31, 50, 59, 83]]}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "o"
    result = _cli("score", "--pred", str(tmp_path / "p.jsonl"), "--ref", str(tmp_path / "refs.jsonl"), "--box-format",
                  "maira2", "--metrics", "grounding", "--out", str(out))
    assert result.exit_code == 0, result.output
    written = {json.loads(line)["id"]: json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()}
    b = written[DICOM_B]["boxes"][0]
    assert (b["x1"], b["y1"], b["x2"], b["y2"]) == (100, 181, 190, 287)
    # DICOM_B's reference is (100,200)-(280,320): intersection 90 x 87, union 180*120 + 90*106 - 90*87
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["grounding_miou"])
    scores = (out / "scores.csv").read_text().splitlines()
    row = next(line for line in scores if line.startswith(DICOM_B)).split(",")
    assert float(row[1]) == pytest.approx(90 * 87 / (180 * 120 + 90 * 106 - 90 * 87))


def test_boxmedrl_ground_parses_svr_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from boxmed_eval.phrase_grounding import GroundingQuery
    from boxmed_model.plugin import BoxMedRL

    image = tmp_path / "x.png"
    Image.new("L", (448, 384), 20).save(image)
    plugin = BoxMedRL(weights="tiny")
    seen = []

    def fake_generate(conversations, images, max_new_tokens, *, use_adapter=True):  # noqa: ANN001, ANN202
        seen.append(([c[0]["content"][1]["text"] for c in conversations], use_adapter))
        return ["<think>base</think><answer>(250,500),(500,1000),(0,0),(100,100)</answer>", "no box"]

    monkeypatch.setattr(plugin, "setup", lambda context=None: None)
    monkeypatch.setattr(plugin, "_generate", fake_generate)
    queries = [GroundingQuery("s#0", "s", "small left effusion", [str(image)], 0, 448, 384),
               GroundingQuery("s#1", "s", "cardiomegaly", [str(image)], 0, 448, 384)]
    answers = plugin.ground(queries)
    texts, use_adapter = seen[0]
    assert use_adapter is False and 'described by: "small left effusion"' in texts[0]  # SVR's prompt, phase-I model
    assert [a.id for a in answers] == ["s#0", "s#1"] and answers[1].boxes == []
    first = answers[0].boxes[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (112.0, 192.0, 224.0, 384.0)  # 0..1000 -> 448x384 pixels
    assert len(answers[0].boxes) == 2 and first.score is None and first.phrase == "small left effusion"


def test_boxmedrl_tiny_grounding_run_on_demo(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    result = _cli("run", "--task", "grounding", "--model", "boxmedrl", "--model-arg", "weights=tiny",
                  "--model-arg", "max_reasoning_tokens=8", "--dataset", "demo", "--limit", "4", "--out",
                  str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "| All |" in result.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["n_queries"] >= 1 and 0.0 <= summary["pg_miou"] <= 1.0


def test_sharded_grounding_run_merges_and_compare_pairs_queries(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from boxmed_eval.evaluation import RunConfig, run

    config = RunConfig(model="retrieval", dataset="demo", out=str(tmp_path / "s"), limit=8, task="grounding",
                       model_args={"max_train": 40})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run(config)  # rank 1 writes its share and leaves
    assert (tmp_path / "s" / "grounding_predictions.rank1.jsonl").exists()
    monkeypatch.setenv("RANK", "0")
    _, summary = run(config)
    assert not list((tmp_path / "s").glob("grounding_predictions.rank*.jsonl"))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    single = RunConfig(model="retrieval", dataset="demo", out=str(tmp_path / "one"), limit=8, task="grounding",
                       model_args={"max_train": 40})
    _, reference = run(single)
    # the merged file is in query order and scores like an unsharded run
    assert (tmp_path / "s" / "grounding_predictions.jsonl").read_text() == \
        (tmp_path / "one" / "grounding_predictions.jsonl").read_text()
    assert summary["pg_miou"] == reference["pg_miou"]
    # compare pairs the runs query by query (another neighbour count changes some answers)
    other = RunConfig(model="retrieval", dataset="demo", out=str(tmp_path / "k1"), limit=8, task="grounding",
                      model_args={"max_train": 40, "ground_neighbours": 1})
    run(other)
    result = _cli("compare", str(tmp_path / "one"), str(tmp_path / "k1"), "--metrics", "pg_iou,pg_acc_0.5",
                  "--alternative", "two-sided", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {line.split(",")[0]: line.split(",") for line in result.output.splitlines()[1:]}
    assert set(rows) == {"pg_iou", "pg_acc_0.5"}
    assert float(rows["pg_iou"][1]) == pytest.approx(reference["pg_miou"], abs=1e-9)  # BASE = mean of per-query IoU


def test_latte_cxr_grounding_queries(tmp_path: Path) -> None:
    from tests.test_dataset_latte import write_fixture

    root = write_fixture(tmp_path / "latte")
    refs = build_queries(get_dataset("latte_cxr", root).load("test"))
    # two radiologists' boxes of one statement on one image are one query with both boxes
    assert [(r.query.phrase, r.category, len(r.boxes)) for r in refs][:2] == [
        ("Left basilar atelectasis", "Atelectasis", 2), ("Small left pleural effusion.", "Pleural abnormality", 1)]
    result = _cli("run", "--task", "grounding", "--model", "retrieval", "--dataset", "latte_cxr", "--data-root",
                  str(root), "--out", str(tmp_path / "l"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "l" / "summary.json").read_text())["n_queries"] == len(refs)


def test_grounding_run_is_locked_and_refuses_another_configuration(tmp_path: Path) -> None:
    import os
    import socket

    from boxmed_eval.errors import BoxmedError
    from boxmed_eval.evaluation import RunConfig, run

    out = tmp_path / "g"
    out.mkdir()
    lock = out / ".boxmed-eval.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "now", "command": "x"}))
    config = RunConfig(model="retrieval", dataset="demo", out=str(out), limit=4, task="grounding",
                       model_args={"max_train": 20})
    with pytest.raises(BoxmedError, match="is in use by pid"):
        run(config)
    lock.unlink()
    run(config)
    with pytest.raises(BoxmedError, match="holds a different run"):
        run(RunConfig(model="retrieval", dataset="demo", out=str(out), limit=4, task="grounding",
                      model_args={"max_train": 21}))


def test_a_plugin_answering_the_wrong_queries_is_an_error(tmp_path: Path) -> None:
    from boxmed_eval.errors import BoxmedError
    from boxmed_eval.models.retrieval import RetrievalBaseline
    from boxmed_eval.phrase_grounding import generate_answers

    class Wrong(RetrievalBaseline):
        name = "wrong"

        def ground(self, queries):  # noqa: ANN001, ANN201
            return [GroundingAnswer(q.id + "x", []) for q in queries]

    refs = build_queries([get_dataset("demo").load("test")[4]])
    with pytest.raises(BoxmedError, match="answered the wrong grounding queries"):
        generate_answers(Wrong(), refs, tmp_path / "a.jsonl", batch_size=2, total=len(refs))
    assert not (tmp_path / "a.jsonl").exists()  # nothing written for a bad batch
