"""Several replicas of one teacher: requests spread by free capacity, a failing replica left out for a while."""

import asyncio

import pytest
from p2m.tasks.core.config import GenerationConfig, Settings
from p2m.tasks.core.errors import P2MError
from p2m.tasks.stages.generate import generate_examples
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.teacher.client import check_teacher_settings
from p2m.tasks.teacher.handle import Teacher
from p2m.tasks.teacher.replicas import ReplicaSet

from tests.conftest import EXAMPLE
from tests.fake_llm_server import FakeLLMServer, numbers_teacher

SPEC = parse_prompt(read_prompt_file(EXAMPLE))
LIMITS = {"requests_per_minute": 60_000, "tokens_per_minute": 10_000_000, "request_timeout": 5, "max_concurrency": 2}


def test_a_flaky_replica_gets_less_traffic_and_the_run_completes(tmp_path):
    """Two replicas, one answering every second request with a 500: every example arrives, the
    flaky one is left out after each failure (and tried again after its cooldown), so it serves
    fewer requests; every failure is counted, per replica too."""
    numbers_teacher.counter = 0
    with (
        FakeLLMServer(numbers_teacher, latency_s=0.2) as healthy,
        FakeLLMServer(numbers_teacher, latency_s=0.2, fail_every=2) as flaky,
    ):
        settings = Settings(
            openai_base_url=f"{healthy.base_url}, {flaky.base_url}",  # a space after the comma is fine
            openai_api_key="k",
            home=tmp_path / "home",
            limits=LIMITS | {"replica_cooldown": 2.0},
        )
        llm = Teacher(settings).client()
        cfg = GenerationConfig(num_examples=60, batch_size=4, examples_per_request=1, votes=1, variety_aspects=0)
        report = asyncio.run(generate_examples(llm, SPEC, cfg))
    assert len(report.examples) == 60
    assert llm.endpoint.replicas == (healthy.base_url, flaky.base_url)
    flaky_failed = sum(r["status"] == 500 for r in flaky.requests)
    assert flaky_failed >= 2, "the flaky replica should have been tried again after its cooldown"
    assert len(flaky.requests) < len(healthy.requests) / 2, (len(flaky.requests), len(healthy.requests))
    assert healthy.answered + flaky.answered == report.usage["sent"] - flaky_failed
    assert report.usage["server_errors"] == flaky_failed
    by_url = {r["url"]: r for r in report.usage["replicas"]}
    assert by_url[flaky.base_url]["failed"] == flaky_failed and by_url[healthy.base_url]["failed"] == 0


def test_without_failures_the_load_is_shared(tmp_path):
    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher, latency_s=0.05) as a, FakeLLMServer(numbers_teacher, latency_s=0.05) as b:
        settings = Settings(
            teacher_urls=f"{a.base_url},{b.base_url}", openai_api_key="k", home=tmp_path / "home", limits=LIMITS
        )
        llm = Teacher(settings).client()
        cfg = GenerationConfig(num_examples=24, batch_size=4, examples_per_request=1, votes=1, variety_aspects=0)
        report = asyncio.run(generate_examples(llm, SPEC, cfg))
    assert len(report.examples) == 24
    assert abs(a.answered - b.answered) <= 4 and a.answered + b.answered == report.usage["sent"]


def test_a_replica_down_at_the_start_is_kept_for_later_and_bad_lists_are_refused(tmp_path):
    with FakeLLMServer(numbers_teacher) as up, FakeLLMServer(numbers_teacher, model="other-model") as other:
        down = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        endpoint = Teacher(Settings(openai_base_url=f"{up.base_url},{down}", home=tmp_path)).endpoint()
        assert endpoint.replicas == (up.base_url, down) and endpoint.model == up.model
        with pytest.raises(P2MError, match="must serve the same model"):
            Teacher(Settings(openai_base_url=f"{up.base_url},{other.base_url}", home=tmp_path)).endpoint()
    with pytest.raises(P2MError, match="none of the 2 teacher replicas answers"):
        Teacher(Settings(openai_base_url=f"{down},http://127.0.0.1:7/v1", home=tmp_path)).endpoint()
    with pytest.raises(P2MError, match="'127.0.0.1:8000/v1' is not an http"):
        check_teacher_settings(Settings(openai_base_url="http://127.0.0.1:8001/v1,127.0.0.1:8000/v1"))


def test_the_choice_goes_to_free_capacity_and_skips_replicas_out_of_rotation():
    replicas = ReplicaSet(["http://a/v1", "http://b/v1"], capacity_each=2, cooldown=60)
    picks = [replicas.pick() for _ in range(4)]
    assert [r.url for r in picks] == ["http://a/v1", "http://b/v1"] * 2  # ties go to the one sent least
    replicas.finished(picks[0], "ok")
    assert replicas.pick().url == "http://a/v1"  # the only one with a free slot
    replicas.finished(picks[1], "failed")  # b is out for a minute: everything goes to a, full or not
    assert {replicas.pick().url for _ in range(3)} == {"http://a/v1"}
    replicas.finished(picks[2], "busy", retry_after=120)  # a 429 asking for two minutes: both out
    assert replicas.pick().url == "http://b/v1"  # the one back first
    assert [(r["url"], r["failed"], r["rate_limited"]) for r in replicas.stats()] == [
        ("http://a/v1", 0, 1),
        ("http://b/v1", 1, 0),
    ]
