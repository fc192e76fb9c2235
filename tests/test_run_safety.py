"""Issue 12: run-directory safety, the PHI guard, the lock, and bad input without tracebacks,
each tried the way a careless or hostile user would, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    for name in ("notes.txt", "judge_cache.jsonl", "pred.jsonl", "ref.jsonl", "summary.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["resumed"] == 1

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


# ------------------------------------------------------------------ 2. the PHI guard is a guarantee

REMOTE = "http://192.0.2.1:8000/v1"  # unroutable documentation address: a request would hang


def _score_judge(pred, ref, out, *extra):
    return invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "green", "--judge", REMOTE,
                  "--judge-model", "m", *extra)


def test_score_without_dataset_or_with_a_typo_refuses_a_remote_judge(tmp_path):
    pred, ref = _pair(tmp_path / "in")
    for extra in ((), ("--dataset", "iu_xrya")):
        result = _score_judge(pred, ref, tmp_path / f"o{len(extra)}", *extra)
        assert result.exit_code == 3, result.output
        assert "refusing to send" in result.output and "--allow-remote-phi" in result.output


def test_references_with_mimic_deid_marks_are_credentialed_whatever_the_dataset(tmp_path):
    pred, ref = _pair(tmp_path / "in")
    ref.write_text(ref.read_text().replace("No effusion", "Compared to ___, no effusion"))
    result = _score_judge(pred, ref, tmp_path / "o", "--dataset", "iu_xray")
    assert result.exit_code == 3 and "refusing to send 'mimic'" in result.output


def test_dataset_flag_cannot_downgrade_a_credentialed_run(tmp_path):
    pred, ref = _pair(tmp_path / "in")
    out = tmp_path / "run"
    assert invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--dataset", "mimic",
                  "--metrics", "token_overlap").exit_code == 0
    for extra in (("--dataset", "demo"), ("--metric-option", "green.dataset=iu_xray")):
        result = invoke("score", "--run", out, "--metrics", "green", "--judge", REMOTE, "--judge-model", "m", *extra)
        assert result.exit_code == 3, result.output
        assert "refusing to send 'mimic'" in result.output


def test_localhost_names_are_resolved(monkeypatch):
    import socket

    from boxmed_eval.judges.phi import is_loopback_url, phi_refusal

    real = socket.getaddrinfo

    def fake(host, *args, **kw):
        if host == "judge.localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 0))]
        if host == "mine.localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert not is_loopback_url("http://judge.localhost:8000/v1")
    assert phi_refusal("http://judge.localhost:8000/v1", "mimic", allow_remote_phi=False)
    assert is_loopback_url("http://mine.localhost:8000/v1")
    assert not is_loopback_url("http://no-such-host.invalid/v1")


def test_judge_requests_ignore_http_proxy(tmp_path, monkeypatch):
    import urllib.request

    from tests.test_judges import FakeServer, _green_reply

    pred, ref = _pair(tmp_path / "in")
    pred.write_text("".join(json.dumps({"id": f"s{i}", "report": f"CAND-{i}"}) + "\n" for i in range(3)))
    replies = {f"CAND-{i}": _green_reply(0, 1) for i in range(3)}
    with FakeServer(replies) as judge, FakeServer(replies) as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/v1", 1)[0])
        monkeypatch.setenv("http_proxy", proxy.url.rsplit("/v1", 1)[0])
        # urlopen's shared opener reads the proxy variables once, when an earlier test first built
        # it: drop it so a plain urlopen would see the proxy, as in a fresh process
        monkeypatch.setattr(urllib.request, "_opener", None)
        result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--dataset", "mimic",
                        "--metrics", "green", "--judge", judge.url, "--judge-model", "m")
        assert result.exit_code == 0, result.output
        assert len(judge.requests) == 3 and proxy.requests == []


# ------------------------------------------------------------------ 3. one writer per run directory

def test_second_run_into_a_busy_directory_is_refused_and_a_killed_holder_is_stale(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import write_iu_dataset

    root_dir = Path(__file__).resolve().parents[1]
    data = write_iu_dataset(tmp_path / "iu", n_train=12, n_val=1, n_test=40)
    out = tmp_path / "run"
    args = ["run", "--model", "slow_retrieval", "--dataset", "iu_xray", "--data-root", str(data), "--batch-size", "2",
            "--metrics", "token_overlap", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(root_dir)}
    cmd = [sys.executable, str(root_dir / "tests" / "slow_plugin_cli.py"), *args]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = out / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (predictions.exists() and predictions.read_text().count("\n") >= 2):
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 2 and "is in use by pid" in second.stderr, second.stderr
    assert first.poll() is None, "the first run must still be generating"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (out / ".boxmed-eval.lock").exists()  # left behind by kill -9
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert not (out / ".boxmed-eval.lock").exists()


def test_lock_held_by_another_host_is_reported_not_stolen(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".boxmed-eval.lock").write_text(json.dumps({"pid": 1, "host": "other-node", "started": "x"}))
    pred, ref = _pair(tmp_path)
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "token_overlap")
    assert result.exit_code == 2 and "other-node" in result.output and "delete" in result.output
    assert not (out / "summary.json").exists()


# ------------------------------------------------------------------ 5. ids pandas would read as missing

def test_ids_like_na_and_null_keep_their_scores_through_rescoring_and_compare(tmp_path):
    import pandas as pd

    from boxmed_eval.rundata import load_run

    ids = ["NA", "nan", "null", "None", "N/A", "s5"]
    ref, pred = tmp_path / "ref.csv", tmp_path / "pred.csv"
    ref.write_text("id,report\n" + "".join(f"{i},No effusion seen {n}.\n" for n, i in enumerate(ids)))
    pred.write_text("id,report\n" + "".join(f"{i},No effusion {n}.\n" for n, i in enumerate(ids)))
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "token_overlap").exit_code == 0
        result = invoke("score", "--run", out, "--metrics", "nlg")  # a later score --run merges scores.csv
        assert result.exit_code == 0, result.output
        runs.append(out)
    scores = load_run(runs[0], require_scores=True).scores
    assert list(scores.index) == ids
    assert scores["token_overlap"].notna().all() and scores["bleu_1"].notna().all()
    raw = pd.read_csv(runs[0] / "scores.csv", dtype=str, keep_default_na=False)
    assert list(raw["id"]) == ids
    result = invoke("compare", runs[0], runs[1])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ 6. errors, not wrong numbers

def test_negative_limit_and_non_positive_batch_size_are_refused(iu_root, tmp_path):
    base = ["run", "--model", "retrieval", "--dataset", "iu_xray", "--data-root", iu_root, "--metrics", "token_overlap"]
    for i, extra in enumerate((("--limit", "-5"), ("--limit", "0"), ("--batch-size", "-1"), ("--batch-size", "0"))):
        out = tmp_path / f"r{i}"
        result = invoke(*base, "--out", out, *extra)
        assert result.exit_code == 2 and "Invalid value" in result.output, (extra, result.output)
        assert not out.exists()
    from boxmed_eval.errors import BoxmedError
    from boxmed_eval.evaluation import RunConfig

    for kw in ({"limit": -5}, {"batch_size": 0}):
        try:
            RunConfig(model="retrieval", dataset="iu_xray", **kw)
        except BoxmedError as exc:
            assert "positive" in str(exc)
        else:
            raise AssertionError(f"{kw} accepted")


def test_empty_reference_and_prediction_files_are_refused(tmp_path):
    for suffix, content in ((".jsonl", ""), (".csv", "id,report\n"), (".json", "[]")):
        ref, pred = tmp_path / f"ref{suffix}", tmp_path / f"pred{suffix}"
        ref.write_text(content)
        pred.write_text(content)
        result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / f"o{suffix}")
        assert result.exit_code == 2 and "it is empty" in result.output, result.output


# ------------------------------------------------------------------ 7. a judge that never answers

class _SilentServer:
    """Accepts connections, reads the request, never answers."""

    def __enter__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.connections = []
        self.accepted = 0

        def serve():
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                self.accepted += 1
                self.connections.append(conn)

        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_silent_judge_fails_fast_and_the_requested_metric_makes_the_exit_non_zero(tmp_path):
    import time

    pred, ref = _pair(tmp_path / "in", n=6)
    with _SilentServer() as server:
        start = time.monotonic()
        result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--dataset", "iu_xray",
                        "--metrics", "green", "--judge", server.url, "--judge-model", "m",
                        "--metric-option", "green.timeout_s=0.5", "--metric-option", "green.concurrency=2")
        elapsed = time.monotonic() - start
    assert result.exit_code == 3, result.output
    assert "did not answer within 0.5 s" in result.output and "--allow-missing-metrics" in result.output
    assert elapsed < 5, f"took {elapsed:.1f} s: a silent judge must fail after about 2 x timeout"
    assert (tmp_path / "o" / "summary.json").exists()  # what could be computed is written
    with _SilentServer() as server:
        allowed = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o2", "--dataset", "iu_xray",
                         "--metrics", "green,token_overlap", "--judge", server.url, "--judge-model", "m",
                         "--metric-option", "green.timeout_s=0.3", "--allow-missing-metrics")
    assert allowed.exit_code == 0, allowed.output
    assert "token_overlap" in json.loads((tmp_path / "o2" / "summary.json").read_text())


def test_silent_judge_does_not_hold_the_process_at_exit(tmp_path):
    import os
    import subprocess
    import sys
    import time

    root_dir = Path(__file__).resolve().parents[1]
    pred, ref = _pair(tmp_path / "in", n=4)
    with _SilentServer() as server:
        start = time.monotonic()
        # timeout 1 s per request, retried once: about 2 s, then exit without waiting for threads
        done = subprocess.run([sys.executable, "-c", "from boxmed_eval.cli import main; main()", "score",
                               "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"),
                               "--dataset", "iu_xray", "--metrics", "green", "--judge", server.url,
                               "--judge-model", "m", "--metric-option", "green.timeout_s=1",
                               "--metric-option", "green.concurrency=4"],
                              env={**os.environ, "PYTHONPATH": str(root_dir)}, capture_output=True, text=True,
                              timeout=120)
        elapsed = time.monotonic() - start
    assert done.returncode == 3, done.stderr
    assert elapsed < 15, f"exit took {elapsed:.1f} s"


@pytest.mark.parametrize("option", ["green.timeout_s=abc", "green.batch_size=x", "green.concurrency=-2",
                                    "green.max_new_tokens=0"])
def test_non_numeric_judge_options_are_named(tmp_path, option):
    pred, ref = _pair(tmp_path / "in")
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--dataset", "iu_xray",
                    "--metrics", "green", "--judge", "http://127.0.0.1:9/v1", "--judge-model", "m",
                    "--metric-option", option)
    assert result.exit_code == 2 and option.split("=")[0] in result.output and "Traceback" not in result.output, \
        result.output


# ------------------------------------------------------------------ 8. bad input: errors, never tracebacks

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    ok = b'{"id": "a", "report": "No effusion."}\n'
    return {
        "latin1.jsonl": (b'{"id": "a", "report": "Opacit\xe9 left."}\n', "not UTF-8 text"),
        "latin1.csv": (b"id,report\na,Opacit\xe9 left.\n", "not UTF-8 text"),
        "surrogate.jsonl": (b'{"id": "a", "report": "bad \\ud800 text"}\n', "unpaired surrogate"),
        "surrogate_id.jsonl": (b'{"id": "\\udfff", "report": "x"}\n', "unpaired surrogate"),
        "array.json": (b'[1, 2]', "expected an object"),
        "number_report.jsonl": (b'{"id": "a", "report": 5}\n', "is not text"),
        "ok.jsonl": (ok, ""),
    }


@pytest.mark.parametrize("name", ["latin1.jsonl", "latin1.csv", "surrogate.jsonl", "surrogate_id.jsonl", "array.json",
                                  "number_report.jsonl"])
@pytest.mark.parametrize("side", ["pred", "ref", "both"])
def test_bad_input_matrix_gives_a_named_error_and_leaves_no_temp_file(tmp_path, name, side):
    files = _bad_inputs(tmp_path)
    bad = tmp_path / name
    bad.write_bytes(files[name][0])
    good = tmp_path / "ok.jsonl"
    good.write_bytes(files["ok.jsonl"][0])
    # "both": the same bad file on each side, so the ids match and no id check refuses it first
    pred, ref = {"pred": (bad, good), "ref": (good, bad), "both": (bad, bad)}[side]
    out = tmp_path / "out"
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "token_overlap")
    assert result.exit_code == 2, result.output
    assert files[name][1] in result.output and name in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_bom_on_a_csv_header_is_not_part_of_the_id_column(tmp_path):
    ref, pred = tmp_path / "ref.csv", tmp_path / "pred.csv"
    ref.write_bytes("\ufeffid,report\na,No effusion.\n".encode("utf-8"))
    pred.write_bytes("\ufeffid,report\na,No effusion.\n".encode("utf-8"))
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--metrics", "token_overlap")
    assert result.exit_code == 0, result.output


def test_out_under_a_file_and_read_only_run_directory(tmp_path, monkeypatch):
    import os

    pred, ref = _pair(tmp_path / "in")
    (tmp_path / "afile").write_text("x")
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "afile" / "out",
                    "--metrics", "token_overlap")
    assert result.exit_code == 2 and "is a file" in result.output and "Traceback" not in result.output, result.output

    out = tmp_path / "run"
    assert invoke("score", "--pred", pred, "--ref", ref, "--out", out, "--metrics", "token_overlap").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    os.chmod(out, 0o555)
    for p in out.iterdir():
        os.chmod(p, 0o444)
    try:
        if os.access(out, os.W_OK):  # root ignores permissions: make the folder refuse new files
            real_open = os.open

            def read_only(path, flags, *args):
                if flags & os.O_CREAT and Path(path).parent == out:
                    raise PermissionError(13, "Permission denied", str(path))
                return real_open(path, flags, *args)

            monkeypatch.setattr(os, "open", read_only)
        result = invoke("score", "--run", out, "--metrics", "token_overlap")
        assert result.exit_code == 2 and "writable" in result.output, result.output
    finally:
        os.chmod(out, 0o755)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_failed_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import os

    from boxmed_eval.errors import BoxmedError
    from boxmed_eval.records import atomic_write_text

    target = tmp_path / "summary.json"
    target.write_text("old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(BoxmedError, match="No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    monkeypatch.undo()
    with pytest.raises(BoxmedError, match="could not write"):
        atomic_write_text(target, "lone \ud800")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_non_string_image_path_is_a_named_error(iu_root, tmp_path):
    annotation = json.loads((iu_root / "annotation.json").read_text())
    annotation["test"][2]["image_path"] = [17, None]
    (iu_root / "annotation.json").write_text(json.dumps(annotation))
    result = invoke("run", "--model", "retrieval", "--dataset", "iu_xray", "--data-root", iu_root,
                    "--out", tmp_path / "r", "--metrics", "token_overlap")
    assert result.exit_code == 2 and "'image_path' holds 17" in result.output and "test[2]" in result.output, \
        result.output


# ------------------------------------------------------------------ real multi-process generation

def test_torchrun_two_ranks_kill_one_then_rerun_completes_each_study_once(tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import write_iu_dataset

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this Python")
    root_dir = Path(__file__).resolve().parents[1]
    data = write_iu_dataset(tmp_path / "iu", n_train=12, n_val=1, n_test=16)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(root_dir), "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "0", str(root_dir / "tests" / "slow_plugin_cli.py"),
           "run", "--model", "slow_retrieval", "--dataset", "iu_xray", "--data-root", str(data), "--batch-size", "2",
           "--metrics", "token_overlap", "--out", str(out)]
    launch = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    lock1, shard1 = out / ".boxmed-eval.rank1.lock", out / "predictions.rank1.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if lock1.exists() and shard1.exists() and shard1.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    else:
        os.killpg(launch.pid, signal.SIGKILL)
        raise AssertionError("rank 1 never wrote its shard")
    rank1 = json.loads(lock1.read_text())["pid"]
    os.kill(rank1, signal.SIGKILL)  # kill -9 of one rank mid-generation
    try:
        assert launch.wait(timeout=120) != 0
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    assert not (out / "summary.json").exists()
    written = shard1.read_text().count("\n")
    assert 2 <= written < 8, "the kill must land in the middle of rank 1's share"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert ids == [f"CXR{i:04d}_IM-{i:04d}" for i in range(13, 29)]  # every study once, in study order
    assert not list(out.glob("predictions.rank*.jsonl")) and not list(out.glob(".boxmed-eval*.lock"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_studies"] == 16 and summary["token_overlap"] == 1.0
    shutil.rmtree(data)


# ------------------------------------------------------------------ 9. quietly degraded input

@pytest.mark.parametrize("content, expected", [
    ('id,report\na,"unclosed quote\nb,second\nc,third\n', "line 2: malformed CSV"),
    ("id,report\na,one, two, three\n", "more field(s) than the header"),
])
def test_csv_that_would_swallow_or_split_reports_is_refused(tmp_path, content, expected):
    ref, pred = tmp_path / "ref.csv", tmp_path / "pred.csv"
    ref.write_text(content)
    # only 'a' is predicted: the misread file then matches the predictions' ids, so nothing but the
    # strict reading can refuse it (a swallowed or cut report was scored silently before)
    pred.write_text("id,report\na,x\n")
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--metrics", "token_overlap")
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_boxmedrl_model_loading_never_asks_the_hub(monkeypatch):
    """A model id that is not in the HF cache is an error at once: the plugin, the trainer's
    load_model and load_processor make no network request for it (offline mode not set)."""
    pytest.importorskip("transformers")
    import socket

    import huggingface_hub.constants
    from huggingface_hub.utils import build_hf_headers

    from boxmed_eval.errors import MissingResourceError
    from boxmed_model.plugin import BoxMedRL
    from boxmed_model.tiny import load_processor
    from boxmed_model.train import load_model

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import
    lookups = []

    def no_network(host, *args, **kw):
        lookups.append(host)
        raise RuntimeError(f"network lookup of {host}")  # not a connection error: nothing retries it

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    build_hf_headers()  # huggingface_hub fetches its agent registry once per process for the user agent
    lookups.clear()
    model_id = "boxmed-eval-tests/not-in-the-cache"
    with pytest.raises(OSError):
        load_model(model_id)
    with pytest.raises(OSError):
        load_processor(model_id)
    with pytest.raises(MissingResourceError, match="cannot load model weights"):
        BoxMedRL(weights=model_id, device="cpu").setup()
    assert lookups == []


def test_misspelt_metric_option_is_reported(tmp_path):
    pred, ref = _pair(tmp_path)
    result = invoke("score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--metrics", "nlg",
                    "--metric-option", "nlg.preproces=none", "--metric-option", "nlg.rouge_stemmer=false",
                    "--metric-option", "chexpret.labeler=rules")
    assert result.exit_code == 0, result.output
    messages = json.loads((tmp_path / "o" / "summary.json").read_text())["messages"]
    assert any("nlg.preproces" in m and "typo" in m for m in messages), messages
    assert not any("rouge_stemmer" in m for m in messages)
    assert any("no metric family 'chexpret'" in m for m in messages)


def test_same_score_command_twice_asks_the_judge_nothing_the_second_time(tmp_path):
    from tests.test_judges import FakeServer, _green_reply

    pred, ref = _pair(tmp_path / "in", n=4)
    pred.write_text("".join(json.dumps({"id": f"s{i}", "report": f"CAND-{i}"}) + "\n" for i in range(4)))
    with FakeServer({f"CAND-{i}": _green_reply(0, 1) for i in range(4)}) as server:
        args = ["score", "--pred", pred, "--ref", ref, "--out", tmp_path / "o", "--dataset", "iu_xray",
                "--metrics", "green", "--judge", server.url, "--judge-model", "m"]
        assert invoke(*args).exit_code == 0
        assert len(server.requests) == 4
        again = invoke(*args)
        assert again.exit_code == 0, again.output
        assert len(server.requests) == 4  # every reply came from judge_cache.jsonl


def test_a_loopback_name_is_connected_to_at_the_checked_address(monkeypatch):
    """DNS rebinding: a name that resolves to loopback when checked and to another machine when
    the request is made must still reach the checked loopback address (or nothing)."""
    import socket

    from boxmed_eval.judges.openai import OpenAIJudge
    from boxmed_eval.judges.phi import PHIGuardError, pinned_loopback_address
    from tests.test_judges import FakeServer

    real = socket.getaddrinfo
    answers = {"rebind.localhost": "127.0.0.1"}

    def fake(host, *args, **kw):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], 0))]
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with FakeServer({}) as server:
        port = server.url.split(":")[2].split("/")[0]
        url = f"http://rebind.localhost:{port}/v1"
        judge = OpenAIJudge(url, dataset="mimic", max_retries=0, timeout_s=5)
        assert judge.model == "green-served"
        answers["rebind.localhost"] = "10.255.255.1"  # the name now points elsewhere
        assert judge._request("GET", "/models")["data"][0]["id"] == "green-served"
        assert judge.requests_sent == 2
        # a new judge checks again and refuses
        with pytest.raises(PHIGuardError):
            OpenAIJudge(url, dataset="mimic", max_retries=0, timeout_s=5)
    assert pinned_loopback_address("http://127.0.0.1:1/v1", "mimic", False) is None  # literals connect as checked
    assert pinned_loopback_address("http://rebind.localhost:1/v1", "iu_xray", False) is None  # public data
