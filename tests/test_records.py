import json

import pytest

from boxmed_eval.errors import DataError
from boxmed_eval.records import Box, Prediction, Study, check_same_ids, iter_jsonl, read_reports, write_jsonl
from boxmed_eval.text import extract_findings, normalize_text


def test_study_prediction_round_trip(tmp_path):
    study = Study(id="s1", image_paths=["a.png"], findings="No effusion.", labels={"Pleural Effusion": 0},
                  boxes=[Box(1, 2, 30, 40, phrase="opacity", category="Lung Opacity", region="left lung")])
    pred = Prediction(id="s1", report="Clear.", reasoning="<think>x</think>", boxes=[Box.from_xywh(1, 2, 3, 4)])
    write_jsonl(tmp_path / "s.jsonl", [study.to_dict(), pred.to_dict()])
    rows = [obj for _, obj in iter_jsonl(tmp_path / "s.jsonl")]
    assert Study.from_dict(rows[0]) == study
    assert Prediction.from_dict(rows[1]) == pred
    assert pred.boxes[0].x2 == 4 and pred.boxes[0].y2 == 6


def test_box_rejects_inverted_and_nan():
    with pytest.raises(ValueError):
        Box(10, 0, 5, 5)
    with pytest.raises(ValueError):
        Box(float("nan"), 0, 5, 5)


def test_read_reports_jsonl_csv_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "1", "report": "A. B."}\n{"id": 2, "findings": "C\\nD \u00e9"}\n')
    assert read_reports(tmp_path / "a.jsonl") == {"1": "A. B.", "2": "C\nD \u00e9"}
    (tmp_path / "a.csv").write_text('id,report\n1,"multi\nline, with comma"\n2,ok\n')
    assert read_reports(tmp_path / "a.csv")["1"] == "multi\nline, with comma"

    (tmp_path / "bad.jsonl").write_text('{"id": "1", "report": "x"}\n{"id": "2", "report": \n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: malformed JSON"):
        read_reports(tmp_path / "bad.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"id": "1", "report": "x"}\n{"id": "1", "report": "y"}\n')
    with pytest.raises(DataError, match="duplicate id '1'"):
        read_reports(tmp_path / "dup.jsonl")
    (tmp_path / "empty.jsonl").write_text('{"id": "1", "report": "   "}\n')
    with pytest.raises(DataError, match="empty report"):
        read_reports(tmp_path / "empty.jsonl")
    assert read_reports(tmp_path / "empty.jsonl", allow_empty=True) == {"1": "   "}
    (tmp_path / "nocol.csv").write_text("id,foo\n1,x\n")
    with pytest.raises(DataError, match="no report column"):
        read_reports(tmp_path / "nocol.csv")
    with pytest.raises(DataError, match="not found"):
        read_reports(tmp_path / "missing.jsonl")


def test_check_same_ids_lists_differences():
    with pytest.raises(DataError) as info:
        check_same_ids({"a": 1, "c": 1}, {"a": 1, "b": 1})
    message = str(info.value)
    assert "1 reference ids have no prediction: b" in message
    assert "1 predicted ids are not in the references: c" in message


def test_normalize_text_and_findings():
    assert normalize_text("  Heart\n\tsize \u2013 normal\u00a0\u201cok\u201d  ") == 'Heart size - normal "ok"'
    report = "EXAMINATION: CHEST\nINDICATION: cough\nFINDINGS: Lungs are clear.\n No effusion.\nIMPRESSION: Normal."
    assert extract_findings(report) == "Lungs are clear. No effusion."
    assert extract_findings("IMPRESSION: nothing") == ""


def test_iter_jsonl_tolerates_only_truncated_tail(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "report": "x"}\n{"id": "2", "rep')
    assert [o["id"] for _, o in iter_jsonl(path, tolerate_truncated_tail=True)] == ["1"]
    with pytest.raises(DataError):
        list(iter_jsonl(path))
    assert json.loads('{"a": 1}') == {"a": 1}
