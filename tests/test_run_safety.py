"""Issue 12: run-directory safety, the PHI guard, the lock, and bad input without tracebacks,
each tried the way a careless or hostile user would, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import tests.cheap_metric  # noqa: F401  registers token_overlap
from boxmed_eval.cli import main


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def _pair(folder: Path, n: int = 3, tag: str = "") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ref, pred = folder / f"ref{tag}.jsonl", folder / f"pred{tag}.jsonl"
    ref.write_text("".join(json.dumps({"id": f"s{i}", "report": f"No effusion {i}."}) + "\n" for i in range(n)))
    pred.write_text("".join(json.dumps({"id": f"s{i}", "report": f"No effusion {tag}."}) + "\n" for i in range(n)))
    return pred, ref


# ------------------------------------------------------------------ 1. score --out never destroys

def test_score_into_existing_run_keeps_everything_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    pred, ref = _pair(out)  # the inputs sit inside the output directory
    args = ["score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "token_overlap"]
    assert invoke(*args).exit_code == 0
    (out / "notes.txt").write_text("my notes")
    (out / "judge_cache.jsonl").write_text('{"k": "cached reply"}\n')
    again = invoke(*args)  # the same inputs: a resume, nothing deleted
    assert again.exit_code == 0, again.output
    assert json.loads((out / "run.json").read_text())["resumed"] == 1
    for name in ("notes.txt", "judge_cache.jsonl", "pred.jsonl", "ref.jsonl", "summary.json"):
        assert (out / name).exists(), name

    other_pred, _ = _pair(tmp_path / "elsewhere", tag="b")
    refused = invoke("score", "--pred", other_pred, "--ref", ref, "--out", out, "--metrics", "token_overlap")
    assert refused.exit_code == 2 and "holds a different run" in refused.output and "--overwrite" in refused.output
    assert (out / "summary.json").exists()

    replaced = invoke("score", "--pred", other_pred, "--ref", ref, "--out", out, "--metrics", "token_overlap",
                      "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "judge_cache.jsonl").read_text() == '{"k": "cached reply"}\n'
    assert (out / "pred.jsonl").exists() and (out / "ref.jsonl").exists()
    assert json.loads((out / "run.json").read_text())["model_args"]["path"] == str(other_pred.resolve())


def test_score_changed_input_content_is_not_a_resume(tmp_path):
    pred, ref = _pair(tmp_path)
    args = ["score", "--pred", pred, "--ref", ref, "--out", tmp_path / "out", "--metrics", "token_overlap"]
    assert invoke(*args).exit_code == 0
    pred.write_text(pred.read_text().replace("No effusion", "Effusion"))
    result = invoke(*args)
    assert result.exit_code == 2 and "inputs_sha256" in result.output


def test_score_refuses_to_overwrite_its_own_input(tmp_path):
    pred, ref = _pair(tmp_path)
    (tmp_path / "predictions.jsonl").write_text(pred.read_text())
    result = invoke("score", "--pred", tmp_path / "predictions.jsonl", "--ref", ref, "--out", tmp_path,
                    "--metrics", "token_overlap", "--overwrite")
    assert result.exit_code == 2 and "would overwrite the input file" in result.output
    assert (tmp_path / "predictions.jsonl").read_text() == pred.read_text()


# ------------------------------------------------------------------ 4. foreign predictions are no resume

def test_run_into_folder_with_predictions_but_no_run_json_is_refused(iu_root, tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    foreign = "".join(json.dumps({"id": f"CXR{i:04d}_IM-{i:04d}", "report": "from another model"}) + "\n"
                      for i in range(15, 21))
    (out / "predictions.jsonl").write_text(foreign)
    args = ["run", "--model", "retrieval", "--dataset", "iu_xray", "--data-root", iu_root, "--out", out,
            "--metrics", "token_overlap"]
    result = invoke(*args)
    assert result.exit_code == 2 and "no run.json" in result.output
    assert (out / "predictions.jsonl").read_text() == foreign and not (out / "summary.json").exists()
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "from another model" not in (out / "predictions.jsonl").read_text()
