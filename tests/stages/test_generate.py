import asyncio
import json

from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.stages.generate import annealed_temperature, generate_examples, majority_vote, parse_examples
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.teacher.client import Endpoint, LLMClient

from tests.conftest import EXAMPLE
from tests.fake_llm_server import FakeLLMServer, numbers_teacher, request_kind

SPEC = parse_prompt(read_prompt_file(EXAMPLE))


def make_llm(server, tmp_path, limits):
    return LLMClient(
        Endpoint(server.base_url, "k", server.model),
        limits,
        tmp_path / "cache.sqlite",
        log_path=tmp_path / "generation.jsonl",
    )


def run(llm, cfg):
    return asyncio.run(generate_examples(llm, SPEC, cfg))


def test_majority_vote_ties_go_to_the_shortest():
    assert majority_vote(["42", "forty-two", "42"]) == "42"
    assert majority_vote(["1234", "12", "123"]) == "12"
    assert majority_vote(["", ""]) == ""


def test_temperature_anneals_from_low_to_high():
    cfg = GenerationConfig(temperature_start=0.2, temperature_end=1.0)
    assert [annealed_temperature(k, 10, cfg) for k in (0, 5, 10, 20)] == [0.2, 0.6, 1.0, 1.0]


def test_bad_replies_are_rejected_with_a_reason():
    assert parse_examples("not json") == ([], {"not_json": 1})
    assert parse_examples('{"examples": [{"input": "x"}, {"input": "...", "output": "..."}]}') == (
        [],
        {"missing_fields": 1, "empty_field": 1},
    )
    assert parse_examples('Here: {"input": "a\nb", "output": 3}')[0] == [{"input": "a\nb", "output": "3"}]
    # A reply cut off mid-array keeps its complete items.
    cut = '{"examples": [{"input": "one", "output": "1"}, {"input": "two", "output": "2"}, {"input": "thr'
    assert parse_examples(cut)[0] == [{"input": "one", "output": "1"}, {"input": "two", "output": "2"}]


def test_reaches_n_distinct_examples_with_votes(tmp_path, fast_limits):
    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher) as server:
        cfg = GenerationConfig(num_examples=10, batch_size=2, examples_per_request=3, votes=3)
        report = run(make_llm(server, tmp_path, fast_limits), cfg)
    assert len(report.examples) == 10 and report.stop_reason.startswith("reached the 10")
    assert len({e["input"] for e in report.examples}) == 10
    assert all(e["output"].isdigit() for e in report.examples)
    votes = [r for r in server.requests if request_kind(r["messages"])[0] == "answer"]
    # Adaptive votes: a teacher that is always right agrees with itself at once, one vote per example.
    assert votes and all(r["n"] == 1 and r["temperature"] == 0 for r in votes)
    assert report.as_dict()["votes_per_example"] == 1.0
    # What the requests cost per accepted example, with the part the server's prompt cache held.
    tokens = report.as_dict()["tokens_per_example"]
    assert tokens["cached_prompt_tokens"] == round(0.6 * tokens["prompt_tokens"], 1) and tokens["completion_tokens"] > 0

    generation = [
        r["messages"][-1]["content"] for r in server.requests if "new examples" in r["messages"][-1]["content"]
    ]
    # Diversity: later prompts show examples already written, and two aspects of the variety plan.
    assert any("one thousand" in g.split("Examples already written")[1] for g in generation)
    assert report.aspects and all("Let them differ from each other in:" in g for g in generation)
    # The rates generation.json reports: a teacher that knows the answers agrees with itself.
    rates = report.as_dict()
    assert rates["vote_agreement"] == 1.0 and len(report.agreements) >= 10
    assert rates["seconds"] > 0 and rates["examples_per_minute"] == round(10 / (rates["seconds"] / 60), 1)
    assert rates["teacher_tokens_per_s"] == round(rates["usage"]["completion_tokens"] / rates["seconds"], 1) > 0
    # The same run again is replayed from the request cache: no speed is claimed for it.
    with FakeLLMServer(numbers_teacher) as server:
        replayed = run(make_llm(server, tmp_path, fast_limits), cfg).as_dict()
    assert replayed["usage"]["sent"] == 0 and replayed["accepted"] == 10
    assert replayed["examples_per_minute"] is None and replayed["teacher_tokens_per_s"] is None


def test_fixed_votes_ask_for_the_majority_in_one_request(tmp_path, fast_limits):
    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher) as server:
        cfg = GenerationConfig(num_examples=6, batch_size=2, examples_per_request=3, votes=3, adaptive_votes=False)
        report = run(make_llm(server, tmp_path, fast_limits), cfg)
    assert len(report.examples) == 6
    assert [r for r in server.requests if r["n"] == 2], "self-consistency votes were not requested"


def test_a_teacher_that_repeats_itself_ends_with_a_reason(tmp_path, fast_limits):
    same = json.dumps({"examples": [{"input": "seventeen", "output": "17"}]})  # also a demonstration: never new
    with FakeLLMServer(lambda m, r: same) as server:
        cfg = GenerationConfig(num_examples=50, batch_size=3, votes=3, max_stale_batches=3, variety_aspects=0)
        report = run(make_llm(server, tmp_path, fast_limits), cfg)
    assert report.examples == [] and "3 batches in a row" in report.stop_reason
    assert report.batches == 3 and report.duplicates_removed == 9
    # A known input is dropped before its votes are paid for.
    assert all("new examples" in r["messages"][-1]["content"] for r in server.requests)


def test_request_cap_ends_generation(tmp_path, fast_limits):
    with FakeLLMServer(lambda m, r: "nonsense") as server:
        cfg = GenerationConfig(
            num_examples=50, batch_size=4, votes=1, max_stale_batches=100, variety_aspects=0, max_api_calls=7
        )
        report = run(make_llm(server, tmp_path, fast_limits), cfg)
    assert "cap of 7 API requests" in report.stop_reason
    assert report.rejected == {"not_json": 7} and server.answered == 7  # the cap is exact, not per batch


def test_killed_run_resumes_without_paying_twice(tmp_path, fast_limits):
    numbers_teacher.counter = 0
    cfg = GenerationConfig(num_examples=8, batch_size=2, examples_per_request=2, votes=2)
    with FakeLLMServer(numbers_teacher) as server:
        # The "killed" run: it got 4 examples' worth of requests answered before dying.
        run(make_llm(server, tmp_path, fast_limits), cfg.model_copy(update={"num_examples": 4}))
        paid = server.answered
        numbers_teacher.counter = 0  # a fresh teacher would answer differently: the cache must win
        resumed = make_llm(server, tmp_path, fast_limits)
        report = run(resumed, cfg)
    assert len(report.examples) == 8
    assert resumed.meter.cached == paid  # every request answered before came from disk
    assert server.answered == paid + resumed.meter.sent


def test_the_users_inputs_are_answered_first_and_lead_the_examples(tmp_path, fast_limits):
    from p2m.tasks.stages.generate import make_examples

    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher) as server:
        cfg = GenerationConfig(num_examples=5, batch_size=2, examples_per_request=3)
        report = asyncio.run(
            make_examples(
                make_llm(server, tmp_path, fast_limits), SPEC, cfg, inputs=["forty-two", "seventeen", "forty-two"]
            )
        )
    mine = [e for e in report.examples if e.get("source") == "your_inputs"]
    assert [(e["input"], e["output"]) for e in mine] == [("forty-two", "42")]  # "seventeen" is a demonstration
    assert report.duplicates_removed >= 2 and len(report.examples) == 5
    assert report.as_dict()["sources"] == {"your_inputs": 1, "generated": 4}


def test_rounds_asked_for_a_generation_task_say_they_were_not_used(tmp_path, fast_limits):
    from p2m.tasks.stages.generate import make_examples

    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher) as server:
        cfg = GenerationConfig(num_examples=4, batch_size=2, examples_per_request=2, rounds=3)
        report = asyncio.run(make_examples(make_llm(server, tmp_path, fast_limits), SPEC, cfg))
    assert len(report.examples) == 4 and report.rounds == []
    assert report.stop_reason.endswith("(one pass: rounds are for classification tasks, this one is generation)")
