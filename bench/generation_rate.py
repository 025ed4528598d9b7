"""Benchmark: does generation hold its rate limit, survive faults and waste nothing?

Runs p2m's generator against a local OpenAI-compatible server (tests/fake_llm_server.py) that
adds latency, enforces a request limit with 429 + retry-after over a sliding minute, and fails a
share of requests with 500. Reports, per configuration: the busiest 60 s window of requests the
server received against the configured limit, 429s and 500s received, accepted examples per
request, the share of duplicates removed, wall time and peak memory.

    python bench/generation_rate.py                 # about 3 minutes
    python bench/generation_rate.py --rpm 60 --examples 60

prompt2model 0.1.0's generator is not run here yet (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.config import GenerationConfig, LimitsConfig  # noqa: E402
from tasks.generate import generate_examples  # noqa: E402
from tasks.llm import Endpoint, LLMClient  # noqa: E402
from tasks.parse import parse_prompt, read_prompt_file  # noqa: E402
from tests.fake_llm_server import FakeLLMServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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


def run_p2m(rpm: float, examples: int, latency: float, fail_share: float) -> dict:
    spec = parse_prompt(read_prompt_file(ROOT / "examples" / "numbers_to_digits.yaml"))
    ref: list = [None]
    with FakeLLMServer(noisy_teacher(pool=examples * 3, fail_share=fail_share, server_ref=ref), rate_limit_per_minute=rpm, latency_s=latency) as server:
        ref[0] = server
        limits = LimitsConfig(requests_per_minute=rpm, tokens_per_minute=10_000_000, max_concurrency=8, max_retries=8, request_timeout=10)
        cfg = GenerationConfig(num_examples=examples, batch_size=8, votes=1, max_stale_batches=20)
        with tempfile.TemporaryDirectory() as tmp:
            llm = LLMClient(Endpoint(server.base_url, "k", server.model), limits, Path(tmp) / "cache.sqlite")
            started = time.monotonic()
            report = asyncio.run(generate_examples(llm, spec, cfg, limits))
            wall = time.monotonic() - started
        times = [r["time"] for r in server.requests]
        answered = server.answered
        statuses = [r["status"] for r in server.requests]
    window = busiest_window(times)
    return {
        "system": "p2m", "configured_rpm": rpm, "busiest_60s": window, "of_limit": round(window / rpm, 3),
        "requests": len(times), "429s": statuses.count(429), "500s": statuses.count(500),
        "accepted": len(report.examples), "accepted_per_request": round(len(report.examples) / max(1, answered), 3),
        "duplicates_removed_share": round(report.duplicates_removed / max(1, report.duplicates_removed + len(report.examples)), 3),
        "wall_s": round(wall, 1), "stop": report.stop_reason[:40],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=float, default=120)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--fail-share", type=float, default=0.03)
    args = parser.parse_args()
    rows = [run_p2m(args.rpm, args.examples, args.latency, args.fail_share)]
    cols = list(rows[0])
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
