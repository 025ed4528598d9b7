"""A small OpenAI-compatible server over the embedded SmolLM2-135M-Instruct: the offline teacher.

p2m starts it by itself when no endpoint is configured, so the pipeline's code path (the `openai`
client talking chat completions) is the same offline as against OpenAI, vLLM or Ollama. The model
is weak: it exercises the plumbing and the filters; it is not a source of good data.

Run it alone with `python -m p2m.tasks.local_teacher --port 8001`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from pydantic import BaseModel

from p2m.tasks.embedded import SMOLLM2_NAME
from p2m.tasks.processes import free_port, wait_until_serving

STARTUP_TIMEOUT_S = 300  # the first start converts the GGUF weights (about 20 s on 2 cores)


class ChatRequest(BaseModel):
    """The part of the chat-completions request this server honours."""

    model: str | None = None
    messages: list[dict]
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int | None = 256
    n: int = 1
    seed: int | None = None


def build_app(model_dir: Path, model_name: str = SMOLLM2_NAME):
    """A FastAPI app serving /v1/models and /v1/chat/completions for the model in `model_dir`."""
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lock = threading.Lock()  # one generation at a time: 2 cores, one model
    app = FastAPI(title="p2m local teacher")

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "p2m"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        ids = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        max_new = max(1, min(req.max_tokens or 256, 512))
        sample = req.temperature > 0
        with lock, torch.inference_mode():
            if req.seed is not None:
                torch.manual_seed(req.seed)
            out = model.generate(
                **ids,
                max_new_tokens=max_new,
                do_sample=sample,
                temperature=req.temperature if sample else None,
                top_p=req.top_p if sample else None,
                num_return_sequences=max(1, req.n),
                pad_token_id=tokenizer.eos_token_id,
            )
        prompt_len = ids["input_ids"].shape[1]
        choices, completion_tokens = [], 0
        for i, seq in enumerate(out):
            new = seq[prompt_len:]
            n_new = int((new != tokenizer.pad_token_id).sum()) if tokenizer.pad_token_id is not None else len(new)
            completion_tokens += n_new
            choices.append({
                "index": i,
                "message": {"role": "assistant", "content": tokenizer.decode(new, skip_special_tokens=True).strip()},
                "finish_reason": "length" if n_new >= max_new else "stop",
            })
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_len, "completion_tokens": completion_tokens, "total_tokens": prompt_len + completion_tokens},
        }

    return app


@contextlib.contextmanager
def running_local_teacher(home: Path, port: int = 0):
    """Start the local teacher in a child process; yields its base URL; stops it on exit.

    Raises P2MError if it does not come up (its log is in HOME/local-teacher.log).
    """
    port = port or free_port()
    log_path = Path(home) / "local-teacher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2m.tasks.local_teacher", "--home", str(home), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/health", "local teacher", STARTUP_TIMEOUT_S, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from p2m.tasks.config import DEFAULT_HOME
    from p2m.tasks.embedded import smollm2_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    app = build_app(smollm2_path(args.home))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
