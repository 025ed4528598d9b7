"""`p2m serve`: the student behind an OpenAI-compatible endpoint (`/v1/chat/completions`, `/v1/models`).

An application that calls the teacher switches to the student by changing `base_url` and the
model name: it sends the same messages; the server takes the last user message as the input,
builds the training prompt from the run's instruction (`format_prompt`, tokenized by the student's
tokenizer), and replies with the student's answer cleaned as evaluation cleans it. System
messages and earlier turns are ignored: the student was trained on one input at a time.

Backends: a decoder-only student runs in llama.cpp from its GGUF export (q8_0 unless told
otherwise; continuous batching over `serve.parallel` slots); an encoder-decoder student runs in
ONNX Runtime from its ONNX export. A missing or stale export (made from an older model) is made
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
from p2m.tasks.core.processes import check_exposure
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
        if body.get("model") != name:
            return openai_error(
                404,
                f"The model '{body.get('model')}' does not exist; this server has '{name}'.",
                "invalid_request_error",
                "model_not_found",
            )
        try:
            text = message_text(body.get("messages"))
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
        if body.get("stream"):
            # The answer is short and made whole; it goes out as one content chunk, then the stop chunk.
            def events():
                base = {"id": reply_id, "object": "chat.completion.chunk", "created": now, "model": name}
                content = {"index": 0, "delta": {"role": "assistant", "content": answer.text}, "finish_reason": None}
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
                {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}
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
    import socket

    if not (Path(run_dir) / "model").is_dir() or not (Path(run_dir) / "spec.json").is_file():
        raise BadInputError(f"{run_dir} has no trained model; run `p2m run PROMPT --out {run_dir}` first")
    with socket.socket() as s:
        # As uvicorn will bind: a port whose last server just stopped (connections in TIME_WAIT) is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise BadInputError(f"cannot serve on {host}:{port} ({e.strerror}); pass another --port") from None


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
