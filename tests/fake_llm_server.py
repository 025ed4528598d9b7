"""A local OpenAI-compatible server for tests: scripted replies and injected faults, on loopback.

`FakeLLMServer(reply_fn)` serves /v1/models and /v1/chat/completions in a background thread.
`reply_fn(messages, request) -> str` writes each reply. Faults are queued per request:
`server.faults.extend(["429", "500", "timeout"])` makes the next requests fail that way (also
"401", "html": a web page with status 200, "badjson": a broken JSON body, "notopenai": JSON that
is not a chat completion, "empty": no choices, "hang": no answer for 10 minutes);
`server.fault_always = "500"` fails every request that way; `fail_every=k` answers every k-th
request with a 500 (a flaky replica);
`server.retry_after_s` is what a scripted 429 asks the client to wait (default 50 ms);
`rate_limit_per_minute` enforces a real sliding-window limit with 429 + retry-after;
`server.stall_if = predicate(body)` holds the matching requests unanswered until it is cleared.
Every request is recorded in `server.requests` (time, messages, status); `busiest_minute()`
counts the most requests the server let through in any 60 seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import functools
import itertools
import json
import re
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response


class FakeLLMServer:
    def __init__(
        self,
        reply_fn=None,
        model: str = "fake-teacher",
        rate_limit_per_minute: float | None = None,
        latency_s: float = 0.0,
        port: int | None = None,
        fail_every: int | None = None,
    ):
        self.reply_fn = reply_fn or (lambda messages, req: '{"input": "x", "output": "y"}')
        self.model = model
        self.rate_limit = rate_limit_per_minute
        self.latency_s = latency_s
        self.faults: collections.deque[str] = collections.deque()
        self.refuse_logprobs = False  # answer a request for log-probabilities with HTTP 400
        self.fault_always: str | None = None
        self.retry_after_s = 0.05  # what a scripted 429 asks for
        self.fail_every = fail_every
        self.stall_if = None
        self.stalled = 0
        self.requests: list[dict] = []
        self._window: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = port or s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = json.loads(await request.body())
            if self.refuse_logprobs and body.get("logprobs"):
                return JSONResponse({"error": {"message": "logprobs is not supported"}}, status_code=400)
            if self.stall_if and self.stall_if(body):
                self.stalled += 1
                while self.stall_if and self.stall_if(body):
                    await asyncio.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                fault = self.faults.popleft() if self.faults else self.fault_always
                if self.fail_every and (len(self.requests) + 1) % self.fail_every == 0:
                    fault = "500"
                limited = False
                if self.rate_limit:
                    while self._window and now - self._window[0] >= 60:
                        self._window.popleft()
                    limited = len(self._window) >= self.rate_limit
                    if not limited:
                        self._window.append(now)
                status = 429 if (fault == "429" or limited) else int(fault) if fault in ("500", "401") else 200
                self.requests.append(
                    {
                        "time": time.time(),
                        "messages": body["messages"],
                        "status": status,
                        "n": body.get("n", 1),
                        "temperature": body.get("temperature"),
                    }
                )
            if status == 429:
                wait = (60 - (now - self._window[0])) if limited else self.retry_after_s
                return JSONResponse(
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    status_code=429,
                    headers={"retry-after-ms": str(int(max(wait, 0.01) * 1000))},
                )
            if status in (500, 401):
                return JSONResponse(
                    {"error": {"message": "boom" if status == 500 else "invalid api key"}}, status_code=status
                )
            if fault == "html":
                return HTMLResponse("<html><body><h1>Welcome to nginx!</h1></body></html>")
            if fault == "badjson":
                return Response(
                    '{"id": "chatcmpl-x", "choices": [{"message": {"content": "hi', media_type="application/json"
                )
            if fault == "notopenai":
                return {"status": "ok", "hello": "world"}
            if fault == "empty":
                return {
                    "id": "chatcmpl-x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": self.model,
                    "choices": [],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10},
                }
            if fault == "timeout":
                await asyncio.sleep(30)
            if fault == "hang":
                await asyncio.sleep(600)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            n = int(body.get("n") or 1)
            texts = [self.reply_fn(body["messages"], body) for _ in range(n)]
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                    for i, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 5 * n,
                    "total_tokens": 10 + 5 * n,
                    "prompt_tokens_details": {"cached_tokens": 6},  # as llama.cpp's server reports its prompt cache
                },
            }

        return app

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def busiest_minute(self) -> int:
        """The most requests let through (not answered 429) in any 60 s window."""
        times = sorted(r["time"] for r in self.requests if r["status"] != 429)
        return max((bisect.bisect_left(times, t + 60) - i for i, t in enumerate(times)), default=0)

    @property
    def answered(self) -> int:
        return sum(r["status"] == 200 for r in self.requests)


def request_kind(messages: list[dict]) -> tuple[str, str | int]:
    """What p2m asks for in a chat: ("generate", how many examples), ("aspects", how many),
    ("parse", the prompt), or ("answer", the input to answer)."""
    last, system = messages[-1]["content"], messages[0]["content"] if messages[0]["role"] == "system" else ""
    if match := re.search(r"Write (\d+) new examples", last):
        return "generate", int(match.group(1))
    if match := re.search(r"List (\d+) different ways", last):
        return "aspects", int(match.group(1))
    if system.startswith("You split a task prompt"):
        return "parse", last
    return "answer", last.rsplit("Input:", 1)[-1].split("\n", 1)[0].strip()


def numbers_teacher(messages: list[dict], request: dict) -> str:
    """A teacher for the numbers-to-digits task that knows the answer: deterministic and correct.

    Generation requests get fresh numbers (a counter), answer requests get the digits.
    """
    from examples.make_datasets import number_to_words

    kind, value = request_kind(messages)
    if kind == "generate":
        examples = []
        for _ in range(value):
            numbers_teacher.counter += 7
            n = 1000 + numbers_teacher.counter
            examples.append({"input": number_to_words(n), "output": str(n)})
        return json.dumps({"examples": examples})
    if kind == "aspects":
        return json.dumps({"aspects": ["size of the number", "thousands or not", "hyphens", "round numbers"][:value]})
    return words_to_number(str(value))


numbers_teacher.counter = 0


TICKET_LABELS = ["billing", "bug", "feature request"]
KEYWORDS = {"billing": "invoice", "bug": "crash", "feature request": "wish"}


def ticket_teacher(messages: list[dict], request: dict) -> str:
    """A scripted teacher: defines labels, writes inputs with a label's keyword (every fifth one cut
    off, every seventh written for `bug` really about billing) and labels inputs by keyword
    ("maybe" inputs get a different answer each time)."""
    system, last = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You write short definitions"):
        return json.dumps({label: f"tickets about {KEYWORDS[label]}s" for label in TICKET_LABELS})
    if system.startswith("You write inputs for a classification task"):
        count, label = re.search(r"Write (\d+) new inputs whose correct label is ([a-z ]+):", last).groups()
        inputs = []
        for _ in range(int(count)):
            n = next(ticket_teacher.counter)
            if n % 5 == 4:
                inputs.append(f"Ticket {n}: I need help with the")  # cut off
            elif n % 7 == 6 and label == "bug":
                inputs.append(f"Ticket {n}: my invoice is wrong")  # written for bug, but about billing
            else:
                inputs.append(f"Ticket {n}: something about a {KEYWORDS[label]}")
        return json.dumps({"inputs": inputs})
    if system.startswith("You split a task prompt"):
        return "{}"  # unusable: the prompt's labelled blocks are read by rule
    if "Reply with the label only." in system or "Reply with the output only" in system:
        text = last
        if "maybe" in text:
            return json.dumps(TICKET_LABELS[next(ticket_teacher.counter) % 3])
        return json.dumps(next((label for label, word in KEYWORDS.items() if word in text), "bug"))
    raise AssertionError(f"unexpected request: {system[:60]}")


ticket_teacher.counter = itertools.count()


def words_to_number(text: str) -> str:
    """The digits for number words (below 200,000), or "unknown"."""
    return _WORDS_TO_NUMBER().get(text.strip(), "unknown")


@functools.cache
def _WORDS_TO_NUMBER() -> dict[str, str]:
    from examples.make_datasets import number_to_words

    return {number_to_words(n): str(n) for n in range(200_000)}


@contextlib.contextmanager
def serve_app(app):
    """Serve any ASGI app on a free loopback port in a thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
