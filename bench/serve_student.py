"""The served student against in-process transformers generate and against the local teacher, on the same inputs.

    .venv/bin/python bench/serve_student.py RUN_DIR [--eval-data FILE] [--clients 1,8,32] [--requests 64]

For each system and each number of concurrent clients, `--requests` requests (the eval data's
inputs in order, cycled) are sent by that many client threads; the table gives requests per second,
latency p50/p95 as the client sees it, exact match of the answers, the model's size on disk and
the peak RSS of the process that holds the model. Each system runs in its own child process (so
one's memory never counts for another), one after the other (never two at once on 2 cores):

- served: `p2m serve RUN_DIR` (GGUF q8_0 for a decoder-only student, llama.cpp, `P2M_SERVE__PARALLEL`
  slots), called over HTTP with the `openai` client, as an application would;
- transformers: the safetensors model in the client's process, `generate` per request (greedy,
  batch 1, what an application that loads the model itself does), clients calling it concurrently;
- teacher: p2m's local teacher (whatever `p2m teacher` serves here), asked few-shot with the
  user's demonstrations as evaluation asks it, over HTTP.

Ratios (requests/s against transformers at the same number of clients) are printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def peak_rss_mb(pid: int | None = None) -> float:
    """VmHWM (peak resident memory) of a process, in MB."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 0)
    return 0.0


def load(run_dir: Path, eval_data: Path | None) -> tuple[dict, list[dict]]:
    from p2m.tasks.core.run_store import read_json
    from p2m.tasks.ship.export import held_out_rows
    from p2m.tasks.storage.datafiles import read_pairs

    rows = read_pairs(eval_data) if eval_data else held_out_rows(run_dir)
    return read_json(run_dir / "spec.json"), [{"input": r["input"], "output": r["output"]} for r in rows]


def drive(ask, rows: list[dict], clients: int, requests: int) -> dict:
    """Send `requests` inputs through `ask(text) -> answer` from `clients` threads; throughput, latency, exact match."""
    from p2m.tasks.student.inference import exact_match
    from p2m.tasks.student.runtime import percentile

    items = [rows[i % len(rows)] for i in range(requests)]

    def one(row):
        started = time.perf_counter()
        answer = ask(row["input"])
        return answer, (time.perf_counter() - started) * 1000

    ask(rows[0]["input"])  # warm-up, not counted
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, items))
    wall = time.perf_counter() - started
    ms = [r[1] for r in results]
    return {
        "requests_per_s": round(requests / wall, 2),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "exact_match": round(exact_match([r[0] for r in results], [r["output"] for r in items]), 4),
    }


def child(system: str, run_dir: Path, eval_data: Path | None, levels: list[int], requests: int) -> dict:
    """Run one system at every level; returns its rows (printed as JSON by the child process)."""
    spec, rows = load(run_dir, eval_data)
    out = {"system": system, "levels": {}}
    if system == "transformers":
        from p2m.tasks.core.run_store import read_json
        from p2m.tasks.ship.export import files_mb
        from p2m.tasks.student.runtime import TorchStudent

        student = TorchStudent(
            run_dir / "model", read_json(run_dir / "model_choice.json")["architecture"], spec["instruction"], 64
        )
        out["size_mb"] = files_mb(run_dir / "model")
        for n in levels:
            out["levels"][n] = drive(lambda x: student.predict(x).text, rows, n, requests)
        out["peak_rss_mb"] = peak_rss_mb()
        return out
    import openai

    if system == "served":
        from p2m.tasks.core.config import load_settings
        from p2m.tasks.core.processes import free_port, wait_until_serving
        from p2m.tasks.ship.serve import ensure_export, model_name

        cfg = load_settings().serve
        record = ensure_export(run_dir, None, None, cfg, cfg.max_tokens)  # made (and checked) before timing starts
        port = free_port()
        # The server's log stays open for the child's whole life, and its name is read on failure.
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"p2m-bench-serve-{port}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2m.flows.cli", "serve", str(run_dir), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_until_serving(proc, f"http://127.0.0.1:{port}/health", "student server", 600, Path(log.name))
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
            name = model_name(run_dir)

            def ask(text):
                reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": text}])
                return reply.choices[0].message.content

            for n in levels:
                out["levels"][n] = drive(ask, rows, n, requests)
            out["peak_rss_mb"] = peak_rss_mb(proc.pid)
            out["size_mb"] = record["size_mb"]
            out["export"] = f"{record['format']}-{record['quantize']}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return out
    # The local teacher, through p2m's own machinery (started and stopped here).
    import psutil
    from p2m.tasks.core.config import load_settings
    from p2m.tasks.stages.generate import answer_prompt, clean_answer
    from p2m.tasks.stages.parse import PromptSpec
    from p2m.tasks.teacher.handle import Teacher

    settings = load_settings()
    teacher = Teacher(settings)
    try:
        endpoint = teacher.endpoint()
        client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=600)
        prompt_spec = PromptSpec(**spec)

        def ask(text):
            reply = client.chat.completions.create(
                model=endpoint.model,
                messages=answer_prompt(prompt_spec, text, settings.evaluation.teacher_demos),
                temperature=0,
                max_tokens=64,
            )
            return clean_answer(reply.choices[0].message.content or "")

        for n in levels:
            out["levels"][n] = drive(ask, rows, n, max(n, requests // 2))  # the teacher is slow: half the requests
        children = psutil.Process().children(recursive=True)
        out["peak_rss_mb"] = max([peak_rss_mb(c.pid) for c in children] + [peak_rss_mb()])
        out["size_mb"] = None
        out["model"] = endpoint.model
    finally:
        teacher.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--eval-data", type=Path, help="inputs and references (default: the run's held-out split)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (the teacher gets half)")
    parser.add_argument("--systems", default="served,transformers,teacher")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.run_dir.resolve(), args.eval_data, levels, args.requests)))
        return
    results = {}
    for system in args.systems.split(","):
        started = time.monotonic()
        command = [
            sys.executable,
            __file__,
            str(args.run_dir),
            "--child",
            system,
            "--clients",
            args.clients,
            "--requests",
            str(args.requests),
        ]
        if args.eval_data:
            command += ["--eval-data", str(args.eval_data)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{system}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{system}: done in {time.monotonic() - started:.0f}s", file=sys.stderr)
    base = results.get("transformers", {}).get("levels", {})
    print("| system | clients | requests/s | vs transformers | p50 ms | p95 ms | exact match | size MB | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for system, r in results.items():
        label = {
            "served": f"served student ({r.get('export', '')})",
            "transformers": "transformers in-process",
            "teacher": f"local teacher ({r.get('model', '')})",
        }[system]
        for n, level in r["levels"].items():
            ratio = f"{level['requests_per_s'] / base[n]['requests_per_s']:.2f}x" if n in base else "-"
            print(
                f"| {label} | {n} | {level['requests_per_s']} | {ratio} | {level['p50_ms']} | {level['p95_ms']} "
                f"| {level['exact_match']:.1%} | "
                f"{r.get('size_mb') if r.get('size_mb') is not None else '-'} | {r['peak_rss_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
