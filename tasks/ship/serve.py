"""`p2m serve`: the student behind an OpenAI-compatible endpoint (`/v1/chat/completions`, `/v1/models`).

An application that calls the teacher switches to the student by changing `base_url` and the
model name: it sends the same messages; the server takes the last user message as the input,
builds the training prompt from the run's instruction (`format_prompt`, tokenized by the student's
tokenizer), and replies with the student's answer cleaned as evaluation cleans it. System
messages and earlier turns are ignored: the student was trained on one input at a time.

Backends: a decoder-only student runs in llama.cpp from its GGUF export (q8_0 unless told
otherwise; continuous batching over `serve.parallel` slots); an encoder-decoder or an
encoder-classifier student runs in ONNX Runtime from its ONNX export. A classifier answers a
label; with `logprobs: true` (and `top_logprobs: k`) the reply carries the label distribution
in OpenAI's shape, one "token" per label. A missing or stale export (made from an older model) is made
and checked first (`p2m.tasks.ship.export`).

The HTTP layer is FastAPI on uvicorn (both already p2m dependencies through Prefect): one small
front for both backends, which is also where the API key is checked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the (string) annotations of the handlers here
from p2m.tasks.core.config import ServeConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.processes import check_exposure, check_port_free
from p2m.tasks.ship.export import check_run_for_export, current_export, export_name, export_student, load_student


def default_export(architecture: str, fmt: str | None, quantize: str | None) -> tuple[str, str | None]:
    """(format, quantization) served when none is asked: GGUF q8_0 for decoder-only, ONNX fp32 otherwise."""
    if fmt is None:
        fmt = "gguf" if architecture == "decoder-only" else "onnx"
    if quantize is None and fmt == "gguf":
        quantize = "q8_0"
    return fmt, quantize


def ensure_export(run_dir: Path, fmt: str | None, quantize: str | None, cfg: ServeConfig, max_tokens: int) -> dict:
    """The export to serve: an up-to-date one if it exists, else a new one (checked); returns its record."""

    choice = check_run_for_export(run_dir, fmt or "onnx")["choice"]
    fmt, quantize = default_export(choice["architecture"], fmt, quantize)
    check_run_for_export(run_dir, fmt)
    record = current_export(run_dir, export_name(fmt, quantize))
    if record is None or record.get("max_tokens") != max_tokens:
        record = export_student(run_dir, fmt, quantize, cfg, max_tokens)
    return record


def model_name(run_dir: Path) -> str:
    """The model name clients send: `p2m-` and the run folder's name."""
    return f"p2m-{Path(run_dir).resolve().name}"


def message_text(messages: list[dict]) -> str:
    """The input: the last user message's text (a string, or the text parts of a content list)."""
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(
                    part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
                )
            return str(content or "")
    raise ValueError("the request has no user message: send the input as the last message with role 'user'")


def label_logprobs(answer, top: int) -> dict | None:
    """OpenAI's `choices[0].logprobs` for a classifier's answer: one content entry, the label, with
    the `top` most probable labels as its alternatives; None for an answer without probabilities."""
    import math

    if answer.probabilities is None:
        return None

    def entry(label: str, p: float) -> dict:
        return {"token": label, "logprob": math.log(max(p, 1e-45)), "bytes": list(label.encode("utf-8"))}

    ranked = sorted(answer.probabilities.items(), key=lambda kv: -kv[1])
    chosen = entry(answer.text, answer.probabilities[answer.text])
    return {"content": [chosen | {"top_logprobs": [entry(label, p) for label, p in ranked[:top]]}]}


def requested_logprobs(body: dict) -> int | None:
    """How many alternatives a request wants: None without `logprobs: true`, else `top_logprobs` (0-20).

    Raises ValueError for a `top_logprobs` that is not a whole number from 0 to 20 (OpenAI's range).
    """
    if not body.get("logprobs"):
        return None
    top = body.get("top_logprobs") or 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ValueError("top_logprobs must be a whole number from 0 to 20")
    return top


def request_problem(body) -> str | None:
    """Why a chat-completions body cannot be answered (None: it can), said as OpenAI's API would.

    The shape OpenAI defines, checked in one place before anything reads the body: an object
    with `model` a string and `messages` a list of objects with a string `role` and a `content`
    that is a string or a list of {"type": "text", "text": ...} parts (None only off the user's
    turns); `max_tokens` a whole number and `temperature` a number when given. Every text must
    be valid Unicode: a lone surrogate (sent escaped, as "\\ud800") cannot be tokenized.
    Anything else used to fail deep in the handler as HTTP 500.
    """
    if not isinstance(body, dict):
        return "The body must be a JSON object with 'model' and 'messages'."
    if not isinstance(body.get("model"), str):
        return "'model' must be a string: the model's name (see /v1/models)."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of objects with 'role' and 'content'."
    for i, message in enumerate(messages):
        problem = message_problem(message, f"messages[{i}]")
        if problem:
            return problem
    for field, kinds, what in (("max_tokens", (int,), "a whole number"), ("temperature", (int, float), "a number")):
        value = body.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return f"'{field}' must be {what}."
    return None


def message_problem(message, where: str) -> str | None:
    """Why one chat message is malformed (None: it is fine); `where` names it in the reason."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return f"{where} must be an object with a string 'role'."
    content = message.get("content")
    if content is None and message["role"] != "user":
        return None  # an assistant turn with tool calls only; ignored anyway
    if isinstance(content, str):
        texts = [content]
    elif isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        texts = [p["text"] for p in content]
    else:
        return f"{where}.content must be a string or a list of {{'type': 'text', 'text': string}} parts."
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where}.content is not valid Unicode (a lone surrogate such as \\ud800)."
    return None


def openai_error(status: int, message: str, kind: str, code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def build_app(student, name: str, api_key: str | None = None, parallel: int = 8, record: dict | None = None):
    """The FastAPI app serving `student` (anything with `predict(text) -> Answer`) as model `name`."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="p2m student", docs_url=None, redoc_url=None)
    # At most `parallel` requests generate at once (llama.cpp's slots), each on a thread of its own
    # (the runtimes release the GIL while they compute); the rest wait their turn here.
    from concurrent.futures import ThreadPoolExecutor

    gate = asyncio.Semaphore(parallel)
    workers = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="student")
    created = int(time.time())

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                return openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name}  # no paths: anyone may ask, key or not

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "p2m"}]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != name:
            return openai_error(
                404,
                f"The model '{model_id}' does not exist; this server has '{name}'.",
                "invalid_request_error",
                "model_not_found",
            )
        return {"id": name, "object": "model", "created": created, "owned_by": "p2m"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return openai_error(400, "The body is not JSON.", "invalid_request_error")
        problem = request_problem(body)
        if problem:
            return openai_error(400, problem, "invalid_request_error")
        if body.get("model") != name:
            return openai_error(
                404,
                f"The model '{body.get('model')}' does not exist; this server has '{name}'.",
                "invalid_request_error",
                "model_not_found",
            )
        try:
            text = message_text(body.get("messages"))
            top = requested_logprobs(body)
        except ValueError as e:
            return openai_error(400, str(e), "invalid_request_error")
        async with gate:
            try:
                answer = await asyncio.get_running_loop().run_in_executor(workers, student.predict, text)
            except BadInputError as e:
                return openai_error(400, str(e), "invalid_request_error", "context_length_exceeded")
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        now = int(time.time())
        logprobs = None if top is None else label_logprobs(answer, top)
        if body.get("stream"):
            # The answer is short and made whole; it goes out as one content chunk, then the stop chunk.
            def events():
                base = {"id": reply_id, "object": "chat.completion.chunk", "created": now, "model": name}
                delta = {"role": "assistant", "content": answer.text}
                content = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}
                yield f"data: {json.dumps(base | {'choices': [content]})}\n\n"
                stop = {"index": 0, "delta": {}, "finish_reason": "stop"}
                yield f"data: {json.dumps(base | {'choices': [stop]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": reply_id,
            "object": "chat.completion",
            "created": now,
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    return app


def open_student(run_dir: Path, fmt: str | None, quantize: str | None, cfg: ServeConfig):
    """(runtime, export record) for the run's student, exporting it first if needed."""

    run_dir = Path(run_dir).resolve()
    record = ensure_export(run_dir, fmt, quantize, cfg, cfg.max_tokens)
    info = check_run_for_export(run_dir, record["format"])
    student = load_student(
        Path(record["path"]),
        info["choice"]["architecture"],
        info["spec"]["instruction"],
        cfg.max_tokens,
        parallel=cfg.parallel,
        threads=cfg.threads,
    )
    return student, record


STUDENT_KEY_SETTING = "P2M_SERVE__API_KEY (the key clients must send)"


def check_serve_inputs(run_dir: Path, host: str, port: int) -> None:
    """Raise BadInputError for a folder without a trained model or a port already taken."""
    if not (Path(run_dir) / "model").is_dir() or not (Path(run_dir) / "spec.json").is_file():
        raise BadInputError(f"{run_dir} has no trained model; run `p2m run PROMPT --out {run_dir}` first")
    check_port_free(host, port)


def serve_student(
    run_dir: Path, cfg: ServeConfig, fmt: str | None = None, quantize: str | None = None, on_ready=None
) -> None:
    """Serve the run's student on cfg.host:cfg.port until interrupted (blocks)."""
    import uvicorn

    check_serve_inputs(run_dir, cfg.host, cfg.port)
    check_exposure(cfg.host, bool(cfg.api_key), cfg.insecure_no_auth, "the student server", STUDENT_KEY_SETTING)
    student, record = open_student(run_dir, fmt, quantize, cfg)
    app = build_app(student, model_name(run_dir), cfg.api_key, cfg.parallel, record)
    if on_ready:
        on_ready(record)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    finally:
        student.close()
