"""Judge backends end to end: a tiny random Llama through the ``hf`` backend (batching, left
padding, parse-failure path, HF-cache resolution), a chat-completions server on loopback for
the ``openai`` backend (real HTTP, concurrency, retry on 500, timeouts, unreachable), the
reply cache, the PHI guard and the CLI option helper."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from boxmed_eval.errors import BoxmedError
from boxmed_eval.judges import configured_judge_metrics, judge_options_from_cli
from boxmed_eval.judges.base import GenerationSettings, JudgeError, JudgeSpec, parse_judge_spec, run_judge
from boxmed_eval.judges.cache import CACHE_FILE, JudgeCache
from boxmed_eval.judges.phi import PHIGuardError, is_credentialed, is_loopback_url, phi_refusal
from boxmed_eval.metrics.base import compute_metrics
from boxmed_eval.metrics.green import GreenMetric

GOOD_REPLY = ("[Explanation]:\nok\n\n[Clinically Significant Errors]:\n(a) False report of a finding in the "
              "candidate: 1.\n(b) Missing a finding present in the reference: 0.\n\n[Matched Findings]:\n3. a; b; c")

# ----------------------------------------------------------------------------------------
# tiny local model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 1-layer random Llama with a byte-level BPE tokenizer, saved like a real checkpoint."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from boxmed_eval.metrics.green import make_green_prompt

    folder = tmp_path_factory.mktemp("tiny_judge")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [make_green_prompt("Heart size is normal. No effusion.", "Mild cardiomegaly. Small left effusion."),
              GOOD_REPLY] * 4
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=bos, eos_token_id=tokenizer.token_to_id("</s>"),
                         pad_token_id=tokenizer.token_to_id("<pad>"))
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_green_prompt_format_adds_bos_and_eos_like_green_score(tiny_model_dir):
    from boxmed_eval.judges.hf import HFJudge, render_prompt

    judge = HFJudge(tiny_model_dir, batch_size=2, device="cpu")
    text = render_prompt("PROMPT", "green", judge.tokenizer)
    assert text == "<|user|>\nPROMPT</s>\n<|assistant|>\n</s>\n<|assistant|>\n</s>"
    ids = judge.tokenizer(text)["input_ids"]
    assert ids[0] == judge.tokenizer.bos_token_id and ids[-1] == judge.tokenizer.eos_token_id


def test_hf_backend_batches_match_one_by_one(tiny_model_dir):
    from boxmed_eval.judges.hf import HFJudge

    prompts = ["short one", "a somewhat longer prompt about pleural effusion and cardiomegaly",
               "medium prompt here", "x"]
    settings = GenerationSettings(max_new_tokens=5, prompt_format="raw")
    batched = HFJudge(tiny_model_dir, batch_size=3, device="cpu")
    replies = dict(batched.generate(prompts, settings))
    assert sorted(replies) == [0, 1, 2, 3] and batched.batches_run == 2
    single = HFJudge(tiny_model_dir, batch_size=1, device="cpu")
    alone = dict(single.generate(prompts, settings))
    assert single.batches_run == 4
    # left padding + attention mask: a prompt's greedy reply does not depend on its batch-mates
    assert replies == alone
    assert all(isinstance(r, str) for r in replies.values())


def test_green_through_hf_backend_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    """Plumbing: random weights write garbage, which must come out NaN and counted (never 0),
    with the raw replies kept; a second scoring loads nothing."""
    from boxmed_eval.judges import hf

    built: list[hf.HFJudge] = []
    original = GreenMetric.make_backend

    def tracking(self):
        backend = original(self)
        built.append(backend)
        return backend

    monkeypatch.setattr(GreenMetric, "make_backend", tracking)
    refs = {f"s{i}": f"Reference {i}: heart size normal, no effusion." for i in range(5)}
    hyps = {f"s{i}": f"Candidate {i}: " + "mild cardiomegaly " * i for i in range(5)}
    run_dir = tmp_path / "run"
    metric = GreenMetric(judge=str(tiny_model_dir), cache_dir=str(run_dir), batch_size=2, max_new_tokens=4, parse="lenient",
                         device="cpu")
    assert metric.available() == (True, "")
    result = compute_metrics(["green"], refs, hyps, options={"green": metric.options})
    assert len(built) == 1 and built[0].batches_run == 3  # 5 pairs, batches of 2
    assert result.corpus["green_parse_failures"] == 5.0
    assert all(math.isnan(v) for v in result.per_sample["green"].values())
    assert math.isnan(result.corpus["green"])
    table = result.tables["green_replies"]
    assert list(table["id"]) == list(refs) and table["parse_problem"].str.len().gt(0).all()
    lines = (run_dir / CACHE_FILE).read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["judge"] == str(tiny_model_dir) for line in lines)

    again = compute_metrics(["green"], refs, hyps, options={"green": metric.options})
    assert len(built) == 1  # nothing loaded the second time
    assert list(again.tables["green_replies"]["reply"]) == list(table["reply"])


def test_hub_id_resolves_in_local_cache_only(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    metric = GreenMetric(judge="tiny-org/tiny-judge/sub", device="cpu", max_new_tokens=2)
    ok, reason = metric.available()
    assert not ok and "huggingface-cli download tiny-org/tiny-judge" in reason
    # lay out the HF cache as huggingface_hub does: refs/main -> snapshots/<revision>/
    repo = tmp_path / "models--tiny-org--tiny-judge"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "abc123" / "sub")
    assert metric.available() == (True, "")
    replies = metric.judge(["hello"])
    assert len(replies) == 1 and isinstance(replies[0], str)


def test_judge_spec_parsing(tmp_path):
    assert parse_judge_spec(None, None, default_repo="a/b", default_subfolder="c") == JudgeSpec("hub", "a/b", "c")
    assert parse_judge_spec("http://127.0.0.1:8000/v1/", "m", default_repo="a/b") == \
        JudgeSpec("openai", "http://127.0.0.1:8000/v1", "", "m")
    assert parse_judge_spec(str(tmp_path), None, default_repo="a/b").kind == "local"
    assert parse_judge_spec("org/repo/sub/dir", None, default_repo="a/b") == JudgeSpec("hub", "org/repo", "sub/dir")
    with pytest.raises(JudgeError):
        parse_judge_spec("./missing-folder", None, default_repo="a/b")
    # a bad --judge makes the metric unavailable with the reason, never a crash
    ok, reason = GreenMetric(judge="./missing-folder").available()
    assert not ok and "missing-folder" in reason


# ----------------------------------------------------------------------------------------
# chat-completions server on loopback


class FakeServer:
    """An OpenAI-compatible chat-completions server answering canned GREEN replies.

    ``fail_first``: prompts (by marker) answered 500 on their first request; ``slow_first``:
    markers whose first request sleeps ``slow_s`` before answering; ``delay_s`` for all."""

    def __init__(self, replies: dict[str, str], *, delay_s: float = 0.0) -> None:
        self.replies = replies
        self.delay_s = delay_s
        self.fail_first: set[str] = set()
        self.slow_first: set[str] = set()
        self.slow_s = 0.0
        self.always_400 = False
        self.seen: dict[str, int] = {}
        self.requests: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "green-served", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(request)
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    if self.path != "/v1/chat/completions":
                        self._send(404, {"error": {"message": f"no route {self.path}"}})
                        return
                    if server.always_400:
                        self._send(400, {"error": {"message": "max_tokens is too large"}})
                        return
                    content = request["messages"][0]["content"]
                    marker = next(k for k in server.replies if k in content)
                    with server.lock:
                        count = server.seen.get(marker, 0)
                        server.seen[marker] = count + 1
                    if marker in server.fail_first and count == 0:
                        self._send(500, {"error": {"message": "engine hiccup"}})
                        return
                    if marker in server.slow_first and count == 0:
                        time.sleep(server.slow_s)
                    time.sleep(server.delay_s)
                    self._send(200, {"id": "x", "object": "chat.completion", "model": request["model"],
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": server.replies[marker]}}]})
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _green_reply(false_findings: int, matched: int) -> str:
    return (f"[Explanation]:\nx\n\n[Clinically Significant Errors]:\n(a) False report of a finding in the "
            f"candidate: {false_findings}.\n\n[Matched Findings]:\n{matched}. x")


def test_openai_backend_green_end_to_end_concurrent_and_cached(tmp_path):
    replies = {f"CAND-{i}": _green_reply(i % 3, 2) for i in range(8)}
    replies["CAND-garbage"] = "Sorry, I can't help with that."
    refs = {f"s{i}": "Reference report." for i in range(8)} | {"sg": "Reference report."}
    hyps = {f"s{i}": f"CAND-{i}" for i in range(8)} | {"sg": "CAND-garbage"}
    with FakeServer(replies, delay_s=0.2) as server:
        options = {"judge": server.url, "cache_dir": str(tmp_path), "concurrency": 4, "dataset": "iu_xray", "parse": "lenient"}
        start = time.perf_counter()
        result = compute_metrics(["green"], refs, hyps, options={"green": options})
        elapsed = time.perf_counter() - start
        assert len(server.requests) == 9
        assert server.max_active >= 2, "requests were not concurrent"
        assert elapsed < 9 * 0.2  # faster than one at a time
        request = server.requests[0]
        assert request["model"] == "green-served" and request["temperature"] == 0.0
        assert request["messages"][0]["role"] == "user" and "Objective: Evaluate" in request["messages"][0]["content"]
        green = result.per_sample["green"]
        assert green["s0"] == 1.0 and green["s1"] == pytest.approx(2 / 3) and green["s2"] == pytest.approx(0.5)
        assert math.isnan(green["sg"]) and result.corpus["green_parse_failures"] == 1.0
        assert result.conventions["green_judge"] == "green-served"  # the model the server reports

        again = compute_metrics(["green"], refs, hyps, options={"green": options})
        assert len(server.requests) == 9  # second scoring: no call
        assert again.per_sample["green"] == pytest.approx(green, nan_ok=True)


def test_openai_backend_retries_a_500(tmp_path):
    from boxmed_eval.judges.openai import OpenAIJudge

    with FakeServer({"P1": "one", "P2": "two"}) as server:
        server.fail_first = {"P1"}
        judge = OpenAIJudge(server.url, model="m", backoff_s=0.01, concurrency=2)
        replies = dict(judge.generate(["P1 prompt", "P2 prompt"], GenerationSettings(max_new_tokens=8)))
        assert replies == {0: "one", 1: "two"}
        assert server.seen["P1"] == 2 and judge.requests_sent == 3


def test_openai_backend_timeout_is_retried_then_fails_clearly():
    from boxmed_eval.judges.openai import OpenAIJudge

    with FakeServer({"P": "late answer"}) as server:
        server.slow_first, server.slow_s = {"P"}, 1.5
        judge = OpenAIJudge(server.url, model="m", timeout_s=0.3, backoff_s=0.01, max_retries=2)
        assert dict(judge.generate(["P"], GenerationSettings())) == {0: "late answer"}
        assert judge.requests_sent == 2

        server.delay_s = 1.0  # every request now outlives the timeout
        slow = OpenAIJudge(server.url, model="m", timeout_s=0.2, backoff_s=0.01, max_retries=1)
        with pytest.raises(JudgeError, match="unreachable after 2 attempts"):
            dict(slow.generate(["P again"], GenerationSettings()))


def test_openai_backend_client_errors_are_not_retried():
    from boxmed_eval.judges.openai import OpenAIJudge

    with FakeServer({"P": "x"}) as server:
        server.always_400 = True
        judge = OpenAIJudge(server.url, model="m", backoff_s=0.01)
        with pytest.raises(JudgeError, match="HTTP 400: max_tokens is too large"):
            dict(judge.generate(["P"], GenerationSettings()))
        assert judge.requests_sent == 1


def test_unreachable_server_is_a_clear_error_and_a_skipped_metric(tmp_path):
    import socket

    from boxmed_eval.judges.openai import OpenAIJudge

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(JudgeError, match="unreachable after 2 attempts.*Is the server running"):
        OpenAIJudge(url, max_retries=1, backoff_s=0.01)  # model discovery
    options = {"green": {"judge": url, "judge_model": "m", "cache_dir": str(tmp_path)}}
    from boxmed_eval.judges import openai as openai_module

    original = openai_module.OpenAIJudge.__init__

    def fast_fail(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "max_retries": 0})

    openai_module.OpenAIJudge.__init__ = fast_fail
    try:
        result = compute_metrics(["green"], {"a": "r"}, {"a": "c"}, options=options)
    finally:
        openai_module.OpenAIJudge.__init__ = original
    assert "green" not in result.corpus and "unreachable" in result.messages[0]


def test_openai_backend_keeps_replies_received_before_a_failure(tmp_path):
    """A server dying mid-run: what came back is cached, the rerun only asks the rest."""
    with FakeServer({"OK": "fine", "BAD": "never"}) as server:
        server.always_400 = False
        spec = JudgeSpec("openai", server.url, "", "m")
        cache = JudgeCache.in_dir(tmp_path)
        from boxmed_eval.judges.openai import OpenAIJudge

        def factory():
            return OpenAIJudge(server.url, model="m", concurrency=1, backoff_s=0.01, max_retries=0)

        server.fail_first = {"BAD"}
        with pytest.raises(JudgeError):
            run_judge(["OK 1", "BAD 1"], GenerationSettings(), spec=spec, backend_factory=factory, cache=cache,
                      desc="t")
        reread = JudgeCache.in_dir(tmp_path)
        assert reread.get("m", GenerationSettings(), "OK 1") == "fine"
        assert run_judge(["OK 1", "BAD 1"], GenerationSettings(), spec=spec, backend_factory=factory, cache=reread,
                         desc="t") == ["fine", "never"]
        assert server.seen == {"OK": 1, "BAD": 2}


# ----------------------------------------------------------------------------------------
# cache, PHI guard, CLI helper


def test_cache_survives_a_torn_last_line(tmp_path):
    settings = GenerationSettings()
    cache = JudgeCache.in_dir(tmp_path)
    cache.put("judge", settings, "p1", "reply 1")
    with (tmp_path / CACHE_FILE).open("a") as handle:
        handle.write('{"key": "abc", "rep')  # killed mid-write
    reread = JudgeCache.in_dir(tmp_path)
    assert reread.torn_lines == 1 and reread.get("judge", settings, "p1") == "reply 1"
    reread.put("judge", settings, "p2", "reply 2")
    final = JudgeCache.in_dir(tmp_path)
    assert final.get("judge", settings, "p2") == "reply 2" and final.torn_lines == 1
    # the key covers the judge model and the decoding settings, not just the prompt
    assert final.get("other judge", settings, "p1") is None
    assert final.get("judge", GenerationSettings(max_new_tokens=7), "p1") is None


def test_phi_guard():
    assert is_credentialed("mimic") and is_credentialed("ms_cxr") and is_credentialed("latte_cxr")
    assert is_credentialed("MIMIC-CXR") and not is_credentialed("iu_xray") and not is_credentialed(None)
    assert is_loopback_url("http://127.0.0.1:8000/v1") and is_loopback_url("http://localhost:8000")
    assert is_loopback_url("http://[::1]:8000/v1") and is_loopback_url("http://127.1.2.3/v1")
    assert not is_loopback_url("http://10.0.0.7:8000/v1") and not is_loopback_url("https://api.example.com/v1")
    refusal = phi_refusal("https://api.example.com/v1", "mimic", allow_remote_phi=False)
    assert refusal and "credentialed" in refusal and "--allow-remote-phi" in refusal
    assert phi_refusal("https://api.example.com/v1", "mimic", allow_remote_phi=True) is None
    assert phi_refusal("https://api.example.com/v1", "iu_xray", allow_remote_phi=False) is None
    assert phi_refusal("http://localhost:8000/v1", "ms_cxr", allow_remote_phi=False) is None

    from boxmed_eval.judges.openai import OpenAIJudge

    # refused before any request (the address is unroutable documentation space)
    with pytest.raises(PHIGuardError, match="data use agreement"):
        OpenAIJudge("http://192.0.2.1:8000/v1", model="m", dataset="latte_cxr")
    OpenAIJudge("http://192.0.2.1:8000/v1", model="m", dataset="latte_cxr", allow_remote_phi=True)
    ok, reason = GreenMetric(judge="http://192.0.2.1:8000/v1", dataset="ms_cxr").available()
    assert not ok and "--allow-remote-phi" in reason
    assert GreenMetric(judge="http://192.0.2.1:8000/v1", dataset="ms_cxr", allow_remote_phi="true").available()[0]
    result = compute_metrics(["green"], {"a": "r"}, {"a": "c"},
                             options={"green": {"judge": "http://192.0.2.1:8000/v1", "dataset": "mimic"}})
    assert result.corpus == {} and "credentialed" in result.messages[0]


def test_judge_options_from_cli():
    assert judge_options_from_cli([], []) == {}
    shared = judge_options_from_cli(["http://127.0.0.1:8000/v1"], ["served"], allow_remote_phi=True)
    assert shared["green"] == shared["gema"] == {"judge": "http://127.0.0.1:8000/v1", "judge_model": "served",
                                                 "allow_remote_phi": True}
    split = judge_options_from_cli(["green=http://127.0.0.1:8000/v1", "gema=/models/gema"], ["green=g"],
                                   trust_remote_code=True, dataset="mimic", cache_dir="/runs/x")
    assert split["green"] == {"judge": "http://127.0.0.1:8000/v1", "judge_model": "g", "trust_remote_code": True,
                              "dataset": "mimic", "cache_dir": "/runs/x"}
    assert split["gema"] == {"judge": "/models/gema", "trust_remote_code": True, "dataset": "mimic",
                             "cache_dir": "/runs/x"}
    override = judge_options_from_cli(["http://shared:1/v1", "gema=/models/gema"], [])
    assert override["green"]["judge"] == "http://shared:1/v1" and override["gema"]["judge"] == "/models/gema"
    assert configured_judge_metrics(override) == ["green", "gema"]
    assert configured_judge_metrics(judge_options_from_cli([], [], allow_remote_phi=True)) == []
    with pytest.raises(BoxmedError, match="green given twice"):
        judge_options_from_cli(["green=a/b", "green=c/d"], [])
    with pytest.raises(BoxmedError, match="nothing after"):
        judge_options_from_cli(["gema="], [])


def test_the_server_endpoint_is_part_of_the_cache_key(tmp_path):
    """A server's chat endpoint applies its chat template, completions does not: the replies
    differ, so a cache written through one must not answer the other."""
    from boxmed_eval.judges.cache import cache_key
    from boxmed_eval.metrics.gema import GemaMetric
    from boxmed_eval.metrics.green import GreenMetric

    server = {"judge": "http://127.0.0.1:9/v1", "dataset": "iu_xray"}
    chat = GreenMetric(**server).settings()
    completions = GreenMetric(**server, judge_api="completions").settings()
    assert (chat.server_api, completions.server_api) == ("chat", "completions")
    assert cache_key("m", chat, "p") != cache_key("m", completions, "p")
    # chat keys are those written before the endpoint was part of the key
    assert cache_key("m", chat, "p") == cache_key("m", GenerationSettings(max_new_tokens=chat.max_new_tokens,
                                                                        prompt_format="green"), "p")
    assert GemaMetric(**server).settings().server_api == "completions"  # gemascore's raw prompt
    assert GemaMetric(**server, judge_api="chat").settings().server_api == "chat"
    local = tmp_path / "judge"
    local.mkdir()
    assert GreenMetric(judge=str(local)).settings().server_api == ""


def test_a_total_token_bound_gives_each_prompt_what_it_would_get_alone(tiny_model_dir):
    """green_score's generate(max_length=2048): prompt + reply tokens are bounded, per prompt."""
    from boxmed_eval.judges.hf import HFJudge

    prompts = ["short one", "a somewhat longer prompt about pleural effusion and cardiomegaly", "x"]
    batched = HFJudge(tiny_model_dir, batch_size=3, device="cpu")
    lengths = [len(batched.tokenizer(p)["input_ids"]) for p in prompts]
    total = max(lengths) + 3
    settings = GenerationSettings(max_new_tokens=100, prompt_format="raw", max_total_tokens=total)
    replies = dict(batched.generate(prompts, settings))
    single = HFJudge(tiny_model_dir, batch_size=1, device="cpu")
    assert replies == dict(single.generate(prompts, settings))
    for index, prompt in enumerate(prompts):  # the same as asking for total - prompt length new tokens
        alone = GenerationSettings(max_new_tokens=total - lengths[index], prompt_format="raw")
        assert replies[index] == dict(single.generate([prompt], alone))[0]
    assert len({total - n for n in lengths}) == 3  # three different budgets in one batch
    green_local = GreenMetric(judge=str(tiny_model_dir)).settings()
    assert (green_local.max_total_tokens, green_local.max_new_tokens) == (2048, 2048)  # the total governs
    assert GreenMetric(judge=str(tiny_model_dir), max_new_tokens=4).settings().max_new_tokens == 4  # asked for
    assert GreenMetric(judge="http://127.0.0.1:9/v1").settings().max_total_tokens is None
