import pytest
from p2m.tasks.core.config import RetrievalConfig, StudentConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import dataset_rows, read_json
from p2m.tasks.retrieval.registry import scan_datasets
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.stages.retrieve_datasets import map_columns, retrieve_dataset, unusable_reason
from p2m.tasks.stages.retrieve_model import choose_model

from tests.conftest import DATASETS, EXAMPLE

SPEC = parse_prompt(read_prompt_file(EXAMPLE))


def test_finds_the_matching_dataset_and_maps_its_columns(tmp_path):
    record = retrieve_dataset(SPEC, RetrievalConfig(max_rows=50), DATASETS, tmp_path)
    assert record["chosen"] == "number_words"
    assert record["columns"] == {"input": "words", "output": "digits"}
    rows = dataset_rows(tmp_path / "retrieved")
    assert len(rows) == 50 and set(rows[0]) == {"input", "output"}
    assert read_json(tmp_path / "retrieval.json")["candidates"][0]["name"] == "number_words"


def test_gated_dataset_is_skipped_with_its_reason(tmp_path):
    records = {r.name: r for r in scan_datasets(DATASETS)}
    assert unusable_reason(records["number_words_gated"]).startswith("gated")
    assert map_columns(["text", "label"]) == {"input": "text", "output": "label"}
    assert map_columns(["foo", "bar"]) is None


def test_nothing_fits_is_a_valid_answer(tmp_path):
    from p2m.tasks.core.spec import PromptSpec

    spec = PromptSpec(instruction="Write a haiku about the sea in Japanese")
    record = retrieve_dataset(spec, RetrievalConfig(min_dataset_score=0.6), DATASETS, tmp_path)
    assert record["chosen"] is None and "threshold" in record["reason"]
    assert dataset_rows(tmp_path / "retrieved") == []


def test_forcing_an_unknown_dataset_or_model_says_what_exists(tmp_path):
    with pytest.raises(BadInputError, match="number_words"):
        retrieve_dataset(SPEC, RetrievalConfig(dataset="nope"), DATASETS, tmp_path)
    with pytest.raises(BadInputError, match="smollm2-135m-instruct"):
        choose_model(SPEC, StudentConfig(model="nope"), None, tmp_path)


def test_a_forced_dataset_that_cannot_be_read_is_an_error_naming_its_file(tmp_path):
    """--dataset NAME whose only data file is binary: it was passed over quietly, and the run failed
    later with "only 8 usable examples"; the user named it, so its problem is the error."""
    (tmp_path / "data" / "blob").mkdir(parents=True)
    (tmp_path / "data" / "blob" / "train.jsonl").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(BadInputError, match=r"--dataset blob cannot be used: .*train\.jsonl is not UTF-8"):
        retrieve_dataset(SPEC, RetrievalConfig(dataset="blob"), tmp_path / "data", tmp_path / "run")
    assert not (tmp_path / "run" / "retrieval.json").exists()
    searched = retrieve_dataset(SPEC, RetrievalConfig(min_dataset_score=0), tmp_path / "data", tmp_path / "run")
    assert searched["chosen"] is None and "not UTF-8" in searched["skipped"][0]["reason"]  # found by search: skipped


@pytest.mark.parametrize(
    "config, words",
    [
        ({"model_type": "magic", "auto_map": {"AutoModelForCausalLM": "magic.Model"}}, "needs custom code"),
        ({"model_type": "gpt2", "auto_map": {"AutoModelForCausalLM": "magic.Model"}}, None),  # built in: fine
        ({"model_type": "my_own_arch"}, "needs custom code"),
        ({"model_type": "vit"}, "p2m trains"),
        ({}, "model type (none) is not supported"),
    ],
)
def test_a_forced_model_folder_that_is_left_out_says_why(tmp_path, config, words):
    """--model NAME for a folder in --models-dir that needs custom code: not "unknown ... add its folder
    to --models-dir" (it is there), but why it cannot be used; nothing of its code is run."""
    import json

    (tmp_path / "models" / "odd").mkdir(parents=True)
    (tmp_path / "models" / "odd" / "config.json").write_text(json.dumps(config))
    (tmp_path / "models" / "odd" / "model.safetensors").write_bytes(b"")
    if words is None:
        assert choose_model(SPEC, StudentConfig(model="odd"), tmp_path / "models", tmp_path)["name"] == "odd"
        return
    with pytest.raises(BadInputError, match="not supported") as raised:
        choose_model(SPEC, StudentConfig(model="odd"), tmp_path / "models", tmp_path)
    assert words in str(raised.value) and "add its folder" not in str(raised.value)


def test_model_choice_leaves_out_test_models_and_oversized_ones(tmp_path):
    choice = choose_model(SPEC, StudentConfig(), None, tmp_path)
    assert choice["name"] == "smollm2-135m-instruct" and "score" in choice["reason"]
    assert all(c["name"] not in ("tiny-t5", "tiny-gpt2") for c in choice["candidates"])
    with pytest.raises(BadInputError, match="no model under"):
        choose_model(SPEC, StudentConfig(model_size_cap_gb=0.1), None, tmp_path)


def test_retrieve_datasets_command_prints_json_best_first(capsys):
    import json

    from p2m.flows.cli.main import main

    assert main(["retrieve-datasets", str(EXAMPLE), "--datasets-dir", str(DATASETS), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked[0]["name"] == "number_words" and all({"name", "score"} <= set(c) for c in ranked)
    assert [c["score"] for c in ranked] == sorted((c["score"] for c in ranked), reverse=True)


def test_llm_reranker_majority_vote_can_overrule_or_reject(tmp_path):
    class Voter:
        def __init__(self, replies):
            self.replies = replies

        def complete(self, messages, **kw):
            assert kw["n"] == 3 and "number_words" in messages[-1]["content"]  # the candidates, after the task
            return self.replies

    cfg = RetrievalConfig(rerank="llm", max_rows=5, min_dataset_score=0.0)
    picked = retrieve_dataset(
        SPEC,
        cfg,
        DATASETS,
        tmp_path / "a",
        llm=Voter(['{"dataset": "celsius_to_fahrenheit"}'] * 2 + ['{"dataset": "number_words"}']),
    )
    assert picked["chosen"] == "celsius_to_fahrenheit" and picked["rerank"]["winner"] == "celsius_to_fahrenheit"
    rejected = retrieve_dataset(
        SPEC, cfg, DATASETS, tmp_path / "b", llm=Voter(['{"dataset": "none"}', '{"dataset": "none"}', "garbage"])
    )
    assert rejected["chosen"] is None and "none of the candidates fits" in rejected["reason"]
    tie = retrieve_dataset(
        SPEC,
        cfg,
        DATASETS,
        tmp_path / "c",
        llm=Voter(['{"dataset": "none"}', '{"dataset": "celsius_to_fahrenheit"}', "x"]),
    )
    assert tie["chosen"] == "number_words" and tie["rerank"]["winner"] is None


def test_models_in_the_local_hugging_face_cache_are_candidates(tmp_path, monkeypatch):
    import json
    import os

    from p2m.tasks.retrieval.registry import hf_cache_models_fingerprint, scan_models

    empty = hf_cache_models_fingerprint(tmp_path / "hub")
    repo = tmp_path / "hub" / "models--acme--tiny-t5"
    sha = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "cfg").write_text(json.dumps({"model_type": "t5"}))
    (repo / "blobs" / "weights").write_bytes(b"0" * 1000)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    os.symlink(repo / "blobs" / "cfg", snapshot / "config.json")
    os.symlink(repo / "blobs" / "weights", snapshot / "model.safetensors")
    records = {r.name: r for r in scan_models(None, hf_cache=tmp_path / "hub")}
    cached = records["acme/tiny-t5"]
    assert cached.architecture == "encoder-decoder" and cached.path == str(snapshot) and cached.size_bytes == 1000
    # A download changes the model stage's cache key, so the choice is made again.
    added = hf_cache_models_fingerprint(tmp_path / "hub")
    assert added != empty
    (repo / "refs" / "main").write_text("b" * 40)  # the same model, updated
    assert hf_cache_models_fingerprint(tmp_path / "hub") not in (empty, added)
