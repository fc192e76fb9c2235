"""Judge backend for any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, ...).

Standard library HTTP only (no ``openai`` package). Requests run concurrently on daemon
threads (a process that gives up never waits at exit for requests still in flight);
connection errors, 429 and 5xx answers are retried with exponential backoff; other 4xx
answers fail at once with the server's message. A request that times out (a server that
accepts connections but never answers) is retried once, and then the whole backend gives up:
the worst case is about ``2 x timeout_s`` (default 120 s per request), not attempts x 300 s. An API key, when the server needs
one, is read from ``BOXMED_JUDGE_API_KEY`` (or ``OPENAI_API_KEY``).

``api="chat"`` (default) sends each prompt as one user message to ``/chat/completions`` (the
server applies the judge's chat template; for GREEN serve it with a template equivalent to
:data:`boxmed_eval.metrics.green.GREEN_SERVER_CHAT_TEMPLATE`). ``api="completions"`` sends the
prompt rendered in the metric's own format to ``/completions`` (what the local backend feeds
the model, minus the BOS token that the server adds).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from boxmed_eval.judges.base import GenerationSettings, JudgeBackend, JudgeError
from boxmed_eval.judges.phi import check_remote_judge, pinned_loopback_address

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

DEFAULT_TIMEOUT_S = 120.0
# Attempts of one request that may end in a timeout before the backend gives up: a server
# that accepts connections but never answers must not hold a run for attempts x timeout.
MAX_TIMED_OUT_ATTEMPTS = 2


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; endpoint URLs are cut back to the base."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise JudgeError(f"--judge {url}: not an http(s):// URL")
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class OpenAIJudge(JudgeBackend):
    kind = "openai"

    def __init__(self, base_url: str, *, model: str | None = None, dataset: str | None = None,
                 allow_remote_phi: bool = False, concurrency: int = 8, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_retries: int = 4, backoff_s: float = 1.0, api: str = "chat", api_key: str | None = None,
                 use_proxy: bool = False) -> None:
        self.base_url = normalize_base_url(base_url)
        # refuse before anything is sent, the model listing included
        check_remote_judge(self.base_url, dataset, allow_remote_phi)
        # a name that passed as loopback is connected to at the address that was checked
        self._pinned = None if use_proxy else pinned_loopback_address(self.base_url, dataset, allow_remote_phi)
        self._opener = self._make_opener(use_proxy, dataset, allow_remote_phi)
        if api not in {"chat", "completions"}:
            raise JudgeError(f"judge api must be 'chat' or 'completions', not {api!r}")
        self.api = api
        self.concurrency = _number(concurrency, "concurrency", int, minimum=1)
        self.timeout_s = _number(timeout_s, "timeout_s", float, minimum=0.001)
        self.max_retries = _number(max_retries, "max_retries", int, minimum=0)
        self.backoff_s = _number(backoff_s, "backoff_s", float, minimum=0.0)
        self._given_up: str | None = None  # set once the server is known not to answer
        self.api_key = api_key or os.environ.get("BOXMED_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.requests_sent = 0  # HTTP requests, retries included (tests and logs)
        self.model = model or self._discover_model()

    @property
    def identity(self) -> str:
        return self.model

    def _make_opener(self, use_proxy: bool, dataset: str | None, allow_remote_phi: bool) -> urllib.request.OpenerDirector:
        """No proxy unless ``use_proxy``: an ``HTTP(S)_PROXY`` variable would otherwise send a
        request for a loopback judge to another machine, past the PHI guard."""
        if not use_proxy:
            handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
            if self._pinned:
                handlers += [_PinnedHTTPHandler(self._pinned), _PinnedHTTPSHandler(self._pinned)]
            return urllib.request.build_opener(*handlers)
        scheme = urlsplit(self.base_url).scheme
        host = urlsplit(self.base_url).hostname or ""
        proxy = urllib.request.getproxies().get(scheme)
        if proxy and not urllib.request.proxy_bypass(host):
            check_remote_judge(proxy if "://" in proxy else f"http://{proxy}", dataset, allow_remote_phi)
            log.info("judge requests to %s go through the proxy %s (use_proxy)", self.base_url, proxy)
        return urllib.request.build_opener(urllib.request.ProxyHandler())

    # HTTP ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        timed_out = 0
        for attempt in range(self.max_retries + 1):
            if self._given_up:
                raise JudgeError(self._given_up)
            if attempt:
                # exponential backoff with jitter so concurrent workers do not retry in lockstep
                time.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random() / 2))
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            self.requests_sent += 1
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code not in RETRY_STATUS:
                    raise JudgeError(f"judge server {url} answered HTTP {exc.code}: {detail}") from None
                last_error = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                last_error = f"{type(reason).__name__}: {reason}"
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    timed_out += 1
                    if timed_out >= MAX_TIMED_OUT_ATTEMPTS or attempt == self.max_retries:
                        self._given_up = (
                            f"judge server {url} unreachable after {attempt + 1} attempts: it accepted the "
                            f"connection but did not answer within {self.timeout_s:g} s ({timed_out} times). Is it "
                            "overloaded or stuck? Raise the limit with --metric-option green.timeout_s=SECONDS if "
                            "its replies are just slow. Replies received so far are cached; rerun to resume.")
                        raise JudgeError(self._given_up)
            except json.JSONDecodeError as exc:
                raise JudgeError(f"judge server {url} did not answer JSON ({exc}); is it an OpenAI-compatible "
                                 "server?") from None
            log.info("judge request to %s failed (%s), attempt %d of %d", url, last_error, attempt + 1,
                     self.max_retries + 1)
        raise JudgeError(f"judge server {url} unreachable after {self.max_retries + 1} attempts ({last_error}). "
                         "Is the server running and the URL right (e.g. `vllm serve MODEL --port 8000` and "
                         "--judge http://127.0.0.1:8000/v1)? Replies received so far are cached; rerun to resume.")

    def _discover_model(self) -> str:
        answer = self._request("GET", "/models")
        models = [m.get("id") for m in answer.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not models:
            raise JudgeError(f"judge server {self.base_url} lists no models; pass --judge-model NAME")
        if len(models) > 1:
            log.warning("judge server serves %d models; using %s (pass --judge-model to choose)", len(models),
                        models[0])
        return str(models[0])

    # Generation ---------------------------------------------------------------------

    def _body(self, prompt: str, settings: GenerationSettings) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "max_tokens": settings.max_new_tokens,
                                "n": 1}
        if settings.repetition_penalty is not None:
            body["repetition_penalty"] = settings.repetition_penalty  # vLLM/SGLang/TGI extension
        if self.api == "completions":
            from boxmed_eval.judges.hf import render_prompt

            body["prompt"] = render_prompt(prompt, settings.prompt_format, tokenizer=None)
            return "/completions", body
        body["messages"] = (json.loads(prompt) if settings.prompt_format == "messages"
                            else [{"role": "user", "content": prompt}])
        return "/chat/completions", body

    def _one(self, prompt: str, settings: GenerationSettings) -> str:
        path, body = self._body(prompt, settings)
        answer = self._request("POST", path, body)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"judge server {self.base_url}{path} answered without choices: "
                             f"{json.dumps(answer)[:300]}") from None
        return text or ""

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> Iterator[tuple[int, str]]:
        # Daemon threads rather than a ThreadPoolExecutor: the interpreter joins executor
        # threads at exit, so a failed run would wait for every request still in flight.
        todo: queue.Queue[int] = queue.Queue()
        for index in range(len(prompts)):
            todo.put(index)
        results: queue.Queue[tuple[int, str | None, BaseException | None]] = queue.Queue()
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put((index, self._one(prompts[index], settings), None))
                except BaseException as exc:  # handed to the caller's thread
                    results.put((index, None, exc))

        for _ in range(min(self.concurrency, len(prompts))):
            threading.Thread(target=worker, name="judge", daemon=True).start()
        try:
            for _ in range(len(prompts)):
                index, reply, error = results.get()
                if error is not None:
                    raise error
                yield index, reply or ""
        finally:
            stop.set()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a fixed address; the Host header keeps the URL's name."""

    pinned_address = ""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned_address, self.port), self.timeout, self.source_address)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    pinned_address = ""

    def connect(self) -> None:
        sock = socket.create_connection((self.pinned_address, self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # the certificate is the name's


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, address: str) -> None:
        super().__init__()
        self._connection = type("PinnedHTTP", (_PinnedHTTPConnection,), {"pinned_address": address})

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._connection, req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, address: str) -> None:
        super().__init__()
        self._connection = type("PinnedHTTPS", (_PinnedHTTPSConnection,), {"pinned_address": address})

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._connection, req, context=self._context)


def _number(value: object, name: str, kind: type, *, minimum: float) -> Any:
    """A numeric judge option, or a JudgeError naming it (``green.timeout_s=abc``)."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise JudgeError(f"judge option {name}={value!r} is not a number; e.g. --metric-option "
                         f"green.{name}=30") from None
    if number != number or number < minimum:  # NaN or too small
        raise JudgeError(f"judge option {name}={value!r} must be at least {minimum:g}")
    return number


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", errors="replace")
    except Exception:
        return str(exc.reason)
    try:
        payload = json.loads(text)
        message = payload.get("error", payload)
        if isinstance(message, dict):
            message = message.get("message", message)
        return str(message)[:500]
    except (json.JSONDecodeError, AttributeError):
        return text[:500]
