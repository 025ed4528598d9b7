"""One teacher's requests per minute shared by several processes through Prefect rate limits."""

import asyncio
import bisect
import threading
import time

import pytest
from p2m.tasks.core.config import LimitsConfig, Settings
from p2m.tasks.core.errors import P2MError
from p2m.tasks.teacher.shared_limits import (
    SharedRateLimit,
    ensure_limits,
    limit_names,
    plan_limit,
    plan_limits,
    seconds_until_free,
)


def busiest(times: list[float], window: float) -> int:
    """The most events in any `window` seconds."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


@pytest.mark.parametrize("per_minute", [60, 120, 600, 10_000, 2_000_000])
@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 5.0])
def test_the_plan_keeps_every_minute_within_the_budget_and_uses_most_of_it(per_minute, chunk_seconds):
    plan = plan_limit("x", per_minute, chunk_seconds)
    assert plan.bound(60) <= per_minute + 1e-6
    # The steady rate a busy set of processes gets: decay, as a share of the budget.
    share = plan.decay * 60 / per_minute
    assert share >= (0.9 if chunk_seconds <= 1 else 0.75), share
    assert 1 <= plan.chunk <= plan.capacity and plan.hold == 2 * chunk_seconds


def test_tiny_budgets_still_flow():
    plan = plan_limit("x", 5, 1.0)  # five a minute: one slot of room, no spare chunk
    assert plan.capacity == 1 and plan.bound(60) <= 5 and plan.decay > 0


def test_limit_names_are_readable_unique_and_slash_free():
    requests, tokens = limit_names("custom:llama@http://10.0.0.5:8000/v1")
    assert requests.startswith("p2m-teacher-custom-llama-10.0.0.5-8000-v1-") and requests.endswith("-requests")
    assert tokens == requests.removesuffix("-requests") + "-tokens" and "/" not in requests
    assert limit_names("custom:llama@http://10.0.0.6:8000/v1")[0] != requests


def test_the_wait_counts_the_fraction_already_decayed():
    # 4 of 4 taken, 2 freed a second: 2 more need 1 s from the last update; 0.25 s have passed.
    assert seconds_until_free(4, 4, 2.0, 0.25, 2) == pytest.approx(0.75 + 0.005)
    assert seconds_until_free(2, 4, 2.0, 5.0, 2) == 0  # free now
    # A clock far off (the server's ahead of ours): never a negative or busy wait.
    assert seconds_until_free(4, 4, 2.0, -3.0, 1) == pytest.approx(0.5 + 0.005)
    assert seconds_until_free(4, 4, 100.0, 0.0099, 1) >= 0.02


def _hammer(limit: SharedRateLimit, until: float, times: list[float], errors: list[BaseException]) -> None:
    """A process's worth of requests: as many as the limit allows until `until`, 3 at a time."""

    async def one():
        while time.monotonic() < until:
            permit = await limit.acquire(100)
            times.append(time.monotonic())
            limit.settle(permit, 60)  # replies shorter than estimated give tokens back

    async def main():
        await asyncio.gather(*(one() for _ in range(3)))

    try:
        asyncio.run(main())
    except BaseException as e:  # reported by the test
        errors.append(e)


def test_two_processes_share_one_budget(prefect_harness):
    """Two holders of the same limit (as two processes have: their own reservoirs and clients),
    each asking as fast as they can: together they stay within the bound in every window, and
    use most of it; the server is asked once per chunk, not once per request."""
    limits = LimitsConfig(requests_per_minute=600, tokens_per_minute=1_000_000, shared_chunk_seconds=1.0)
    key = f"custom:fake@http://share-test-{time.time()}/v1"
    plans = plan_limits(key, limits)
    holders = [SharedRateLimit(*plans), SharedRateLimit(*plans)]
    times: list[list[float]] = [[], []]
    errors: list[BaseException] = []
    start = time.monotonic()
    threads = [
        threading.Thread(target=_hammer, args=(h, start + 12, t, errors)) for h, t in zip(holders, times, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    requests = plans[0]
    both = times[0] + times[1]
    for window in (1, 3, 6):
        assert busiest(both, window) <= requests.bound(window), window
    # Both got a share, and together nearly all the limit lets through once its first burst (the
    # capacity) is spent: slots at the rate they decay.
    assert min(len(times[0]), len(times[1])) > 0.25 * len(both)
    steady = [t for t in both if start + 2 <= t < start + 11]
    assert len(steady) >= 0.85 * 9 * requests.decay, (len(steady), 9 * requests.decay)
    grants = sum(h.stats()["grants"] for h in holders)
    assert grants < len(both) / 3


def test_a_deleted_limit_is_an_error_not_a_free_pass(prefect_harness):
    from prefect.client.orchestration import get_client

    limits = LimitsConfig(requests_per_minute=600, tokens_per_minute=1_000_000)
    key = f"custom:fake@http://deleted-test-{time.time()}/v1"
    holder = SharedRateLimit(*plan_limits(key, limits))

    async def use(n):
        for _ in range(n):
            holder.settle(await holder.acquire(10), 10)

    asyncio.run(use(1))  # created on first use
    with get_client(sync_client=True) as client:
        for plan in holder.plans.values():
            client.delete_global_concurrency_limit_by_name(plan.name)
    with pytest.raises(P2MError, match="missing on the Prefect server.*p2m deploy"):
        asyncio.run(use(50))  # past the chunk this process holds


def test_ensure_limits_creates_then_updates_to_the_settings(prefect_harness):
    from prefect.client.orchestration import get_client

    key = f"custom:fake@http://ensure-test-{time.time()}/v1"
    first = ensure_limits(key, LimitsConfig(requests_per_minute=120))
    assert set(first.values()) == {"created"}
    assert set(ensure_limits(key, LimitsConfig(requests_per_minute=120)).values()) == {"ok"}
    changed = ensure_limits(key, LimitsConfig(requests_per_minute=240))
    assert list(changed.values()) == ["updated", "ok"]  # the requests limit changed, the tokens one did not
    plan = plan_limits(key, LimitsConfig(requests_per_minute=240))[0]
    with get_client(sync_client=True) as client:
        held = client.read_global_concurrency_limit_by_name(plan.name)
    assert (held.limit, round(held.slot_decay_per_second, 6)) == (plan.capacity, round(plan.decay, 6))


def test_only_a_remote_teacher_under_a_prefect_server_shares(prefect_harness, monkeypatch):
    from p2m.tasks.teacher.handle import Teacher

    remote = Settings(openai_base_url="http://127.0.0.1:9/v1", teacher_model="m")
    assert Teacher(remote).shared_limit() is not None
    assert Teacher(remote).shared_limit() is Teacher(remote).shared_limit()  # one per teacher in a process
    assert Teacher(Settings(openai_base_url="http://127.0.0.1:9/v1", limits={"shared": "off"})).shared_limit() is None
    assert Teacher(Settings()).shared_limit() is None  # the local teacher


@pytest.mark.slow
def test_two_generate_commands_at_once_keep_the_servers_limit(tmp_path, prefect_harness):
    """Two `p2m generate` processes at once, each configured with the account's 120 requests a
    minute, against a server that answers 429 beyond 120 in any 60 s: its busiest minute stays
    within the limit (and near it), no 429s, and every example is accounted for. Without the shared
    limit each process would send 120 a minute and the server would refuse half of them.
    About 100 s: the limit is per minute, so the run has to last more than one."""
    import json
    import os
    import subprocess
    import sys

    from p2m.tasks.core.run_store import dataset_rows, read_jsonl
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import EXAMPLE, REPO
    from tests.fake_llm_server import FakeLLMServer, numbers_teacher

    per_process, limit = 66, 120
    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher, rate_limit_per_minute=limit, latency_s=0.05) as server:
        procs = []
        for name in ("a", "b"):
            env = {
                **os.environ,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "test",
                "P2M_HOME": str(tmp_path / f"home-{name}"),  # its own request cache: each pays for its requests
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "P2M_GENERATION__EXAMPLES_PER_REQUEST": "1",
                "P2M_GENERATION__VARIETY_ASPECTS": "0",
            }
            cmd = [sys.executable, "-m", "p2m.flows.cli", "generate", str(EXAMPLE), "--out", str(tmp_path / name)]
            cmd += ["--num-examples", str(per_process), "--votes", "1", "--requests-per-minute", str(limit)]
            cmd += ["--tokens-per-minute", "10000000", "--seed", "1" if name == "a" else "2"]
            procs.append(
                subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        outputs = [p.communicate(timeout=400) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert server.busiest_minute() <= limit
    assert server.busiest_minute() >= 0.85 * limit, server.busiest_minute()  # the budget is used, not wasted
    assert not [r for r in server.requests if r["status"] == 429]
    answered = 0
    spans = []
    for name in ("a", "b"):
        assert len(dataset_rows(tmp_path / name / "generated")) == per_process
        report = json.loads((tmp_path / name / "generation.json").read_text())
        assert report["usage"]["rate_limited"] == 0 and report["usage"]["shared_limit"]["grants"] > 0
        sent = [r for r in read_jsonl(tmp_path / name / "generation.jsonl") if not r["cached"] and r["texts"]]
        answered += len(sent)
        spans.append((min(r["time"] for r in sent), max(r["time"] for r in sent)))
    assert answered == server.answered  # every request the server answered is in one run's log
    assert max(s for s, _ in spans) + 30 < min(e for _, e in spans), spans  # they really ran at the same time
