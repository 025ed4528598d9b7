import asyncio
import time

import pytest
from p2m.tasks.core.config import LimitsConfig
from p2m.tasks.core.errors import P2MError
from p2m.tasks.teacher.client import Endpoint, LLMClient, RequestPacer, check_endpoint

from tests.fake_llm_server import FakeLLMServer

MSG = [{"role": "user", "content": "hi"}]


def client(server, tmp_path, limits=None):
    limits = limits or LimitsConfig(requests_per_minute=60_000, tokens_per_minute=10_000_000, request_timeout=2)
    return LLMClient(
        Endpoint(server.base_url, "k", server.model), limits, tmp_path / "cache.sqlite", log_path=tmp_path / "log.jsonl"
    )


def test_answered_request_is_never_sent_twice(tmp_path):
    with FakeLLMServer(lambda m, r: "hello") as server:
        assert client(server, tmp_path).complete(MSG, salt="a") == ["hello"]
        # A new client (a new process after a crash) finds the reply on disk.
        again = client(server, tmp_path)
        assert again.complete(MSG, salt="a") == ["hello"]
        assert server.answered == 1 and again.meter.cached == 1 and again.meter.sent == 0
        client(server, tmp_path).complete(MSG, salt="b")  # another salt is another sample
        assert server.answered == 2


def test_429_500_and_timeout_are_retried_and_counted(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.faults.extend(["429", "500", "timeout"])
        c = client(server, tmp_path)
        assert c.complete(MSG) == ["ok"]
        assert (c.meter.rate_limited, c.meter.server_errors, c.meter.timeouts) == (1, 1, 1)
        assert c.meter.sent == 4


def test_retries_exhausted_is_a_clear_error(tmp_path):
    with FakeLLMServer() as server:
        server.faults.extend(["500"] * 10)
        c = client(server, tmp_path, LimitsConfig(requests_per_minute=60_000, retry_budget=1))
        with pytest.raises(P2MError, match="kept failing.*run the same command again"):
            c.complete(MSG)


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(P2MError, match="cannot reach the LLM endpoint"):
        check_endpoint("http://127.0.0.1:9/v1", "k", timeout=2)


def test_pacer_holds_the_request_rate_across_clients(tmp_path):
    # 600 a minute = one every 0.1 s; 11 requests over 3 clients (as 3 batch tasks would) need >= 1 s.
    with FakeLLMServer(lambda m, r: "ok") as server:
        limits = LimitsConfig(requests_per_minute=600, max_concurrency=8)
        clients = [client(server, tmp_path / str(i), limits) for i in range(3)]

        async def burst():
            await asyncio.gather(*[clients[i % 3].acomplete(MSG, salt=str(i)) for i in range(11)])

        started = time.monotonic()
        asyncio.run(burst())
        assert time.monotonic() - started >= 0.95
        # No half-second window holds more than its share (5) plus one for arrival jitter.
        times = sorted(r["time"] for r in server.requests)
        assert max(sum(t <= u < t + 0.5 for u in times) for t in times) <= 6


def test_pacer_waits_for_tokens():
    pacer = RequestPacer(requests_per_minute=1e9, tokens_per_minute=600)  # 10 tokens a second
    assert pacer.reserve(600) == pytest.approx(0, abs=0.01)  # the full bucket
    assert pacer.reserve(100) == pytest.approx(10, abs=0.1)  # empty: 100 tokens take 10 s


def test_server_rate_limit_is_honoured_without_failing(tmp_path):
    # The server allows 5 a minute but we claim 6000: 429s with retry-after, then success.
    with FakeLLMServer(lambda m, r: "ok", rate_limit_per_minute=5) as server:
        server._window.extend([time.monotonic() - 59.5] * 5)  # the window frees up in 0.5 s
        c = client(server, tmp_path)
        assert c.complete(MSG) == ["ok"]
        assert c.meter.rate_limited >= 1


def test_an_endpoint_that_refuses_logprobs_is_asked_without_them(tmp_path):
    from p2m.tasks.core.config import LimitsConfig
    from p2m.tasks.teacher.client import Endpoint, LLMClient

    from tests.fake_llm_server import FakeLLMServer

    with FakeLLMServer(lambda m, r: '"bug"') as server:
        server.refuse_logprobs = True
        llm = LLMClient(Endpoint(server.base_url, "k", server.model), LimitsConfig(request_timeout=5), tmp_path / "c")
        ask = llm.acomplete_scored
        assert asyncio.run(ask([{"role": "user", "content": "x"}], top_logprobs=5)) == (['"bug"'], None)
        asyncio.run(ask([{"role": "user", "content": "y"}], top_logprobs=5))
    assert llm.meter.sent == 3 and len(server.requests) == 2  # refused once, then never asked again
