"""Benchmark: does generation hold its rate limit, survive faults and waste nothing?

Runs p2m's generator against a local OpenAI-compatible server (tests/fake_llm_server.py) that
adds latency, enforces a request limit with 429 + retry-after over a sliding minute, and fails a
share of requests with 500. Reports, per configuration: the busiest 60 s window of requests the
server received against the configured limit, 429s and 500s received, accepted examples per
request, the share of duplicates removed, wall time and peak memory.

    python bench/generation_rate.py                 # about 3 minutes
    python bench/generation_rate.py --rpm 60 --examples 60

With bench/.ref-venv present (bench/README.md), prompt2model 0.1.0's generator runs next, on a
fresh server with the same settings (its peak memory is its own process's, not shown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2m.tasks.core.config import GenerationConfig, LimitsConfig  # noqa: E402
from p2m.tasks.stages.generate import generate_examples  # noqa: E402
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file  # noqa: E402
from p2m.tasks.teacher.client import Endpoint, LLMClient  # noqa: E402

from tests.fake_llm_server import FakeLLMServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TIMEOUT_S = 600


def noisy_teacher(pool: int, fail_share: float, server_ref: list):
    """Replies with a random example from a pool of `pool` (so duplicates grow as the set fills);
    queues a 500 for the next request with probability `fail_share`; 5% of replies are not JSON."""
    rng = random.Random(0)

    def reply(messages, request):
        if rng.random() < fail_share:
            server_ref[0].faults.append("500")
        if rng.random() < 0.05:
            return "Sure! Here is an example: input is something"
        n = rng.randrange(pool)
        return json.dumps({"input": f"example input number {n}", "output": str(n)})

    return reply


def busiest_window(times: list[float], width: float = 60.0) -> int:
    """Most requests inside any half-open window [t, t + width)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + width:
            j += 1
        best = max(best, j - i)
    return best


def generate_with_p2m(server, rpm: float, examples: int) -> dict:
    spec = parse_prompt(read_prompt_file(ROOT / "examples" / "numbers_to_digits.yaml"))
    limits = LimitsConfig(requests_per_minute=rpm, tokens_per_minute=10_000_000, max_concurrency=8, request_timeout=10)
    cfg = GenerationConfig(num_examples=examples, batch_size=8, votes=1, max_stale_batches=20)
    with tempfile.TemporaryDirectory() as tmp:
        llm = LLMClient(Endpoint(server.base_url, "k", server.model), limits, Path(tmp) / "cache.sqlite")
        report = asyncio.run(generate_examples(llm, spec, cfg))
    return {
        "accepted": len(report.examples),
        "duplicates_removed": report.duplicates_removed,
        "outcome": report.stop_reason[:48],
    }


def generate_with_reference(server, rpm: float, examples: int) -> dict:
    """prompt2model 0.1.0 in its own venv (bench/README.md says how to make it), same server and settings."""
    python = ROOT / "bench" / ".ref-venv" / "bin" / "python"
    cmd = [
        str(python),
        str(ROOT / "bench" / "reference_generator.py"),
        "--base-url",
        server.base_url,
        "--rpm",
        str(int(rpm)),
        "--examples",
        str(examples),
        "--max-api-calls",
        str(max(20 * examples, 50)),
        "--batch-size",
        "8",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        result = {"accepted": None, "outcome": f"killed after {REFERENCE_TIMEOUT_S}s"}
    except (IndexError, json.JSONDecodeError):
        result = {"accepted": None, "outcome": "crashed: " + done.stderr.strip().splitlines()[-1][:60]}
    return {"accepted": result["accepted"], "duplicates_removed": None, "outcome": result["outcome"]}


def measure(system: str, run, rpm: float, examples: int, latency: float, fail_share: float) -> dict:
    """Run one generator against a fresh server; the row of the results table."""
    ref: list = [None]
    with FakeLLMServer(
        noisy_teacher(pool=examples * 3, fail_share=fail_share, server_ref=ref),
        rate_limit_per_minute=rpm,
        latency_s=latency,
    ) as server:
        ref[0] = server
        started = time.monotonic()
        result = run(server, rpm, examples)
        wall = time.monotonic() - started
        times = [r["time"] for r in server.requests]
        statuses = [r["status"] for r in server.requests]
        answered = server.answered
    window = busiest_window(times)
    accepted, dups = result["accepted"], result["duplicates_removed"]
    return {
        "system": system,
        "configured_rpm": rpm,
        "busiest_60s": window,
        "of_limit": round(window / rpm, 3),
        "requests": len(times),
        "429s": statuses.count(429),
        "500s": statuses.count(500),
        "accepted": accepted,
        "accepted_per_request": round(accepted / max(1, answered), 3) if accepted is not None else "-",
        "dup_share_removed": round(dups / max(1, dups + accepted), 3) if dups is not None else "-",
        "wall_s": round(wall, 1),
        "outcome": result["outcome"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=float, default=120)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--fail-share", type=float, default=0.03)
    parser.add_argument("--skip-reference", action="store_true", help="do not run prompt2model 0.1.0")
    args = parser.parse_args()
    setting = (args.rpm, args.examples, args.latency, args.fail_share)
    rows = [measure("p2m", generate_with_p2m, *setting)]
    if (ROOT / "bench" / ".ref-venv" / "bin" / "python").exists() and not args.skip_reference:
        rows.append(measure("prompt2model 0.1.0", generate_with_reference, *setting))
    cols = list(rows[0])
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
