"""Benchmark: one teacher's rate limit shared by 1, 2 and 4 concurrent `p2m generate` runs.

Every run is a `p2m generate` process configured with the account's limit (--requests-per-minute),
all against one scripted OpenAI-compatible server (tests/fake_llm_server.py) that answers 429
beyond that limit in any sliding minute, and one Prefect server (Prefect's test server: SQLite,
like `prefect server start`). Reported per configuration: the server's busiest minute as a share
of the limit (target 0.9-1.0), 429s, examples per minute (all runs together, first request to
last), the shared limit's calls to the Prefect server per 100 requests, and peak memory (the
largest run's resident set, and all runs' together). Then the shared limit's overhead against
the in-process pacer alone: one run where the limit binds (what the shared limit's safety margin
costs) and one where it does not (what asking the Prefect server costs).

    python bench/shared_limit.py                    # about 11 minutes
    python bench/shared_limit.py --rpm 300 --seconds 90 --runs 1 2 4
    python bench/shared_limit.py --api-url http://127.0.0.1:4200/api --runs 4 --shared-only   # your server
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peak_rss import MemoryWatch  # noqa: E402
from tests.fake_llm_server import FakeLLMServer, numbers_teacher  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "numbers_to_digits.yaml"


def run_generators(api_url: str, runs: int, rpm: float, examples_each: int, shared: bool, server_limit: float | None):
    """`runs` concurrent `p2m generate` processes against a fresh scripted server; one result row."""
    numbers_teacher.counter = 0
    work = Path(tempfile.mkdtemp(prefix="p2m-bench-shared-"))
    with FakeLLMServer(numbers_teacher, rate_limit_per_minute=server_limit, latency_s=0.05) as server:
        procs = []
        for i in range(runs):
            env = {
                **os.environ,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "bench",
                "P2M_HOME": str(work / f"home-{i}"),  # each run its own request cache: each pays for its requests
                "PREFECT_API_URL": api_url,
                "P2M_GENERATION__EXAMPLES_PER_REQUEST": "1",
                "P2M_GENERATION__VARIETY_ASPECTS": "0",
                "P2M_LIMITS__SHARED": "auto" if shared else "off",
                "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
            cmd = [sys.executable, "-m", "p2m.flows.cli", "generate", str(EXAMPLE), "--out", str(work / f"run-{i}")]
            cmd += ["--num-examples", str(examples_each), "--votes", "1", "--requests-per-minute", str(rpm)]
            cmd += ["--tokens-per-minute", "100000000", "--seed", str(i), "--max-concurrency", "4"]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        with MemoryWatch([p.pid for p in procs]) as memory:
            errors = [p.communicate()[1].decode(errors="replace")[-500:] for p in procs]
        failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
        accepted, calls, requests = 0, 0, 0
        for i in range(runs):
            report = json.loads((work / f"run-{i}" / "generation.json").read_text())
            accepted += report["accepted"]
            requests += report["usage"]["sent"]
            stats = report["usage"].get("shared_limit")
            if stats:
                calls += stats["reads"] + stats["grants"]
        times = sorted(r["time"] for r in server.requests if r["status"] == 200)
        span = times[-1] - times[0] if len(times) > 1 else float("nan")
        busiest = server.busiest_minute()
        return {
            "limit": "shared (Prefect)" if shared else "pacer alone",
            "runs": runs,
            "rpm_each": int(rpm),
            "busiest_60s": busiest,
            "of_limit": round(busiest / server_limit, 3) if server_limit else "-",
            "429s": sum(r["status"] == 429 for r in server.requests),
            "examples": accepted,
            "examples_per_min": round(accepted / span * 60, 1),
            "traffic_s": round(span, 1),
            "server_calls_per_100_req": round(100 * calls / requests, 1) if requests else 0,
            "peak_rss_mb_largest_run": round(max(memory.peak_each.values()) / 2**20),
            "peak_rss_mb_all_runs": round(memory.peak_sum / 2**20),
            "outcome": "ok" if not failed else f"failed: {failed[0][-200:]}",
        }


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=float, default=300, help="the account's limit, enforced by the server")
    parser.add_argument("--seconds", type=float, default=90, help="traffic per configuration (over a minute)")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--unbounded-examples", type=int, default=400, help="examples for the overhead run")
    parser.add_argument("--api-url", help="a Prefect server to use (default: Prefect's test server, on SQLite)")
    parser.add_argument("--shared-only", action="store_true", help="only the shared-limit rows, no baselines")
    args = parser.parse_args()

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    total = math.ceil(args.rpm * args.seconds / 60)
    rows = []
    server = contextlib.nullcontext() if args.api_url else prefect_test_harness()
    with server, temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from prefect.settings import PREFECT_API_URL

        api = args.api_url or PREFECT_API_URL.value()
        for runs in args.runs:
            rows.append(run_generators(api, runs, args.rpm, math.ceil(total / runs), True, args.rpm))
            print(table(rows[-1:]), flush=True)
        if args.shared_only:
            print()
            print(table(rows))
            return
        # Before: two runs, each pacing itself alone at the whole limit.
        rows.append(run_generators(api, 2, args.rpm, math.ceil(total / 2), False, args.rpm))
        print(table(rows[-1:]), flush=True)
        # Overhead where the limit binds: one run, pacer alone.
        rows.append(run_generators(api, 1, args.rpm, total, False, args.rpm))
        print(table(rows[-1:]), flush=True)
        # Overhead where it does not: a limit far above what one process sends, with and without sharing.
        for shared in (True, False):
            rows.append(run_generators(api, 1, 60_000, args.unbounded_examples, shared, None))
            print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
