"""The IU X-Ray adapter, the registries, and the bad inputs of issue 2 through the CLI."""

import json

import pytest
from click.testing import CliRunner

import tests.cheap_metric  # noqa: F401  registers token_overlap
from boxmed_eval.cli import main
from boxmed_eval.datasets import DATASETS, get_dataset
from boxmed_eval.errors import DataError, MissingResourceError, UnknownNameError
from boxmed_eval.plugins import MODELS, get_model_class, parse_model_args
from tests.conftest import shared_data


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ----------------------------------------------------------------------- adapters / registries

def test_real_iu_annotation_with_its_quirk(tmp_path):
    annotation = shared_data("iu_xray", "r2gen_iu_xray_annotation.json")
    dataset = get_dataset("iu_xray", annotation.parent, annotation=annotation.name, check_images=False)
    sizes = {split: len(dataset.load(split)) for split in ("train", "val", "test")}
    # The copy keys its test list by four spaces; each entry's own split field still says "test".
    assert sizes == {"train": 2069, "val": 296, "test": 590}
    test = dataset.load("test")
    assert test[0].id == "CXR3030_IM-1405" and len(test[0].image_paths) == 2
    assert all("\n" not in s.findings and s.findings == s.findings.strip() for s in test)


def test_iu_adapter_checks_images_and_split(iu_root):
    dataset = get_dataset("iu_xray", iu_root)
    assert len(dataset.load("validate")) == 3  # MIMIC's split name is accepted
    with pytest.raises(DataError, match="unknown split"):
        dataset.load("holdout")
    (iu_root / "images" / "CXR0015_IM-0015" / "1.png").unlink()
    with pytest.raises(DataError, match=r"CXR0015_IM-0015.*image file not found"):
        dataset.load("test")


def test_empty_findings_dropped_and_counted(iu_root, caplog):
    annotation = json.loads((iu_root / "annotation.json").read_text())
    annotation["test"][0]["report"] = "   \n "
    (iu_root / "annotation.json").write_text(json.dumps(annotation))
    dataset = get_dataset("iu_xray", iu_root)
    with caplog.at_level("INFO"):
        studies = dataset.load("test")
    assert len(studies) == 5 and dataset.dropped_empty == 1
    assert "dropped 1 studies with empty findings" in caplog.text


def test_image_path_escaping_root_is_refused(iu_root):
    annotation = json.loads((iu_root / "annotation.json").read_text())
    annotation["test"][1]["image_path"] = ["../../../../etc/passwd"]
    (iu_root / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(DataError, match="escapes the data root"):
        get_dataset("iu_xray", iu_root, check_images=False).load("test")


def test_duplicate_study_ids_rejected(iu_root):
    annotation = json.loads((iu_root / "annotation.json").read_text())
    annotation["test"].append(dict(annotation["test"][0]))
    (iu_root / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(DataError, match="duplicate study id"):
        get_dataset("iu_xray", iu_root).load("test")


def test_malformed_annotation_names_file(iu_root):
    (iu_root / "annotation.json").write_text('{"train": [')
    with pytest.raises(DataError, match=r"annotation.json: malformed JSON"):
        get_dataset("iu_xray", iu_root).load("test")


def test_registries_list_builtins_and_reject_unknown():
    assert {"iu_xray", "mimic", "demo", "ms_cxr", "latte_cxr"} <= set(DATASETS.names())
    assert {"retrieval", "predictions"} <= set(MODELS.names())
    assert get_model_class("retrieval").__name__ == "RetrievalBaseline"
    with pytest.raises(UnknownNameError, match="valid models: .*retrieval"):
        get_model_class("nope")
    with pytest.raises(UnknownNameError, match="valid datasets: .*iu_xray"):
        get_dataset("nope")
    assert parse_model_args(["a=1", "b=x", "c=true", "d=[1,2]"]) == {"a": 1, "b": "x", "c": True, "d": [1, 2]}


def test_missing_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("BOXMED_IU_XRAY_ROOT", raising=False)
    with pytest.raises(MissingResourceError, match="--data-root PATH or set BOXMED_IU_XRAY_ROOT"):
        get_dataset("iu_xray")
    with pytest.raises(MissingResourceError, match="does not exist"):
        get_dataset("iu_xray", tmp_path / "nowhere")


# ----------------------------------------------------------------------- CLI errors

def test_cli_lists(iu_root):
    for command, expected in (("models", "retrieval"), ("datasets", "iu_xray"), ("metrics", "nlg")):
        result = invoke(command)
        assert result.exit_code == 0 and expected in result.output, result.output


def test_cli_unknown_names_list_valid_ones(iu_root, tmp_path):
    result = invoke("run", "--model", "gpt9", "--dataset", "iu_xray", "--data-root", iu_root, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "unknown model 'gpt9'" in result.output and "retrieval" in result.output
    result = invoke("run", "--model", "retrieval", "--dataset", "chexpert", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "valid datasets:" in result.output
    result = invoke("run", "--model", "retrieval", "--dataset", "iu_xray", "--data-root", iu_root,
                    "--model-arg", "colour=red", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "does not take --model-arg colour" in result.output


def test_cli_missing_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("BOXMED_IU_XRAY_ROOT", raising=False)
    result = invoke("run", "--model", "retrieval", "--dataset", "iu_xray", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "BOXMED_IU_XRAY_ROOT" in result.output


def test_score_mismatched_ids_lists_them(tmp_path):
    (tmp_path / "ref.jsonl").write_text('{"id": "a", "report": "No effusion."}\n{"id": "b", "report": "Clear."}\n')
    (tmp_path / "pred.csv").write_text("id,report\na,No effusion.\nz,Clear.\n")
    result = invoke("score", "--pred", tmp_path / "pred.csv", "--ref", tmp_path / "ref.jsonl",
                    "--out", tmp_path / "out", "--metrics", "token_overlap")
    assert result.exit_code == 2
    assert "reference ids have no prediction: b" in result.output and "not in the references: z" in result.output


def test_score_handles_newlines_non_ascii_and_empty_predictions(tmp_path):
    (tmp_path / "ref.jsonl").write_text(json.dumps({"id": "a", "report": "Heart size normal.\nNo effusion."}) + "\n" +
                                        json.dumps({"id": "b", "report": "Opacit\u00e9 \u2013 left base."}) + "\n")
    (tmp_path / "pred.jsonl").write_text(json.dumps({"id": "a", "report": "Heart size\r\nnormal."}) + "\n" +
                                         json.dumps({"id": "b", "report": "  "}) + "\n")
    result = invoke("score", "--pred", tmp_path / "pred.jsonl", "--ref", tmp_path / "ref.jsonl",
                    "--out", tmp_path / "out", "--metrics", "nlg,token_overlap")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_empty_predictions"] == 1 and 0 < summary["bleu_1"] < 1


def test_score_rejects_empty_reference(tmp_path):
    (tmp_path / "ref.jsonl").write_text('{"id": "a", "report": ""}\n')
    (tmp_path / "pred.jsonl").write_text('{"id": "a", "report": "x"}\n')
    result = invoke("score", "--pred", tmp_path / "pred.jsonl", "--ref", tmp_path / "ref.jsonl", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "ref.jsonl: line 1 (id a): empty reference" in result.output


def test_predictions_plugin_and_score_run(iu_root, tmp_path):
    dataset = get_dataset("iu_xray", iu_root)
    lines = [json.dumps({"id": s.id, "report": s.findings.upper()}) for s in dataset.load("test")[:-1]]
    (tmp_path / "gen.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke("run", "--model", "predictions", "--model-arg", f"path={tmp_path / 'gen.jsonl'}", "--dataset",
                    "iu_xray", "--data-root", iu_root, "--out", tmp_path / "r", "--metrics", "token_overlap")
    assert result.exit_code == 2 and "1 studies have no report in the file" in result.output
    result = invoke("run", "--model", "predictions", "--model-arg", f"path={tmp_path / 'gen.jsonl'}", "--dataset",
                    "iu_xray", "--data-root", iu_root, "--out", tmp_path / "r2", "--metrics", "token_overlap", "--limit", 5)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["token_overlap"] == 1.0
    result = invoke("score", "--run", tmp_path / "r2", "--metrics", "nlg")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["token_overlap"] == 1.0 and "bleu_4" in summary  # metrics added, old ones kept


def test_symlinked_image_folder_inside_root_is_allowed(iu_root, tmp_path):
    # Users often keep the image tree on another disk and link it into the data root.
    elsewhere = tmp_path / "other_disk"
    (iu_root / "images").rename(elsewhere)
    (iu_root / "images").symlink_to(elsewhere, target_is_directory=True)
    assert len(get_dataset("iu_xray", iu_root).load("test")) == 6
