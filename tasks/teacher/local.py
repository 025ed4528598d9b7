"""The offline teacher: llama.cpp's own server (through `xllamacpp`) over an embedded GGUF model.

p2m starts it by itself when no endpoint is configured, so the pipeline's code path (the `openai`
client talking chat completions) is the same offline as against OpenAI, vLLM or Ollama. Serving
is llama.cpp's job, not ours: its server batches the requests in flight across `slots`
(continuous batching), reuses a slot's cached prompt prefix (the instruction and demonstrations
every request of a stage shares), and constrains replies to a JSON schema when asked.

The server runs in a child process, bound to 127.0.0.1, behind an API key made for this start
and handed over in the environment (a command line is visible to every local user). It loads in
2-3 s; the 1.5B model takes about 1.9 GB of memory.

Run it alone with `p2m teacher` (or `python -m p2m.tasks.teacher.local --port 8001`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from p2m.tasks.core.config import DEFAULT_HOME
from p2m.tasks.core.processes import free_port, wait_until_serving
from p2m.tasks.teacher.models import teacher_gguf

STARTUP_TIMEOUT_S = 120
KEY_VARIABLE = "P2M_LOCAL_TEACHER_KEY"
CONTEXT_PER_SLOT = 4096  # tokens: an instruction, a few demonstrations, earlier examples and the reply


@dataclass(frozen=True)
class LocalTeacher:
    """A running local teacher: where it answers, the key it wants, and the model's name."""

    base_url: str
    api_key: str
    model: str
    process: subprocess.Popen | None = field(default=None, compare=False, repr=False)  # the child serving it
    log_path: Path | None = field(default=None, compare=False, repr=False)  # where llama.cpp's own lines go


def start_server(
    model_path: Path, port: int, api_key: str | None, slots: int, threads: int, alias: str, gpu_layers: int = -1
):
    """An `xllamacpp.Server` serving `model_path` on 127.0.0.1:`port` (it serves until dropped).

    `gpu_layers`: layers offloaded to a GPU, -1 all; it matters only with a GPU build of xllamacpp
    (CUDA, ROCm, Vulkan); PyPI's CPU build has no GPU device and keeps every layer on the CPU.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = ["127.0.0.1"]  # this machine only
    params.port = port
    params.ui = False  # no web page: an API for p2m
    params.offline = True  # never download anything
    params.n_gpu_layers = gpu_layers
    params.n_parallel = slots
    params.n_ctx = CONTEXT_PER_SLOT * slots  # shared by the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # Threads sleep between steps instead of spinning (llama.cpp's default polls at 50): spinning
    # threads burn the cores while the server idles (the student trains meanwhile) and stall each
    # other whenever another process takes a core.
    params.cpuparams.poll = params.cpuparams_batch.poll = 0
    params.use_jinja = True  # the chat template inside the GGUF file
    params.model_alias = {alias}
    params.verbosity = 1  # errors only (llama.cpp writes to the process's stderr: the log file)
    if api_key:
        params.api_keys = [api_key]
    return xllamacpp.Server(params)


@contextlib.contextmanager
def running_local_teacher(
    home: Path,
    model: str | None = None,
    port: int = 0,
    slots: int = 4,
    threads: int | None = None,
    gpu_layers: int = -1,
    api_key: str | None = None,
):
    """Start the local teacher in a child process; yields a LocalTeacher; stops it on exit.

    `model` is an embedded teacher's name or a .gguf path (None: the default teacher); `api_key`
    the key it wants (None: one made for this start; "": none). Raises P2MError when the model
    cannot be had or the server does not come up. The child's output, llama.cpp's own log lines
    included, goes to HOME/local-teacher.log, never the terminal.
    """
    name, path = teacher_gguf(model, home)  # assembled and checked here, before the child starts
    port = port or free_port()
    api_key = secrets.token_urlsafe(24) if api_key is None else api_key
    log_path = Path(home) / "local-teacher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "p2m.tasks.teacher.local",
        "--model-path",
        str(path),
        "--name",
        name,
        "--port",
        str(port),
        "--slots",
        str(slots),
        "--threads",
        str(threads or os.cpu_count() or 1),
        "--gpu-layers",
        str(gpu_layers),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, KEY_VARIABLE: api_key}
        )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/health", "local teacher", STARTUP_TIMEOUT_S, log_path)
        yield LocalTeacher(f"http://127.0.0.1:{port}/v1", api_key, name, proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C. Without --model-path, the embedded model named by --name (or the default)."""

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="an embedded teacher's name (default: the default teacher)")
    parser.add_argument("--model-path", type=Path, help="a GGUF file (skips the embedded model's assembly)")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers on the GPU (GPU builds): -1 all, 0 none")
    args = parser.parse_args(argv)
    name, path = (
        (args.name or args.model_path.stem, args.model_path) if args.model_path else teacher_gguf(args.name, args.home)
    )
    key = os.environ.get(KEY_VARIABLE)
    server = start_server(path, args.port, key, args.slots, args.threads, name, args.gpu_layers)  # noqa: F841 (serves while referenced)
    print(f"local teacher {name} on http://127.0.0.1:{args.port}/v1", flush=True)
    # SIGTERM ends the process at once and the port is free; dropping the server object instead
    # would wait for any request still in flight (llama.cpp joins its HTTP threads).
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


if __name__ == "__main__":
    main()
