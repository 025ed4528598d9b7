"""Inputs and run folders given as URLs (on moto's S3 server), pasted prompts, run folders named from the prompt."""

import json
import os
from pathlib import Path

import pytest
from p2m.flows.run.inputs import read_run_prompt
from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.spec import prompt_identity
from p2m.tasks.stages.parse import prompt_from_text
from p2m.tasks.storage.locations import fetch, fetch_inputs, in_user_terms, pull_run, run_location, run_name

from tests.conftest import EXAMPLE
from tests.storage.test_storage import s3  # noqa: F401 (the moto fixture)

YAML_PROMPT = EXAMPLE.read_text(encoding="utf-8")


def put(key: str, data: bytes) -> None:
    from p2m.tasks.storage.remote import filesystem

    filesystem().pipe(f"p2m/{key}", data)


def test_a_fetched_folder_downloads_only_what_changed(tmp_path, s3):
    from p2m.tasks.storage.remote import filesystem

    put("in/datasets/a/README.md", b"# a")
    put("in/datasets/a/train.jsonl", b'{"input": "x", "output": "y"}\n')
    put("in/datasets/b/data.csv", b"input,output\n1,2\n")
    local = fetch("s3://p2m/in/datasets", tmp_path, "datasets_dir")
    assert local.name == "datasets" and (local / "a" / "train.jsonl").read_bytes() == b'{"input": "x", "output": "y"}\n'
    stamps = {p: p.stat().st_mtime_ns for p in local.rglob("*") if p.is_file()}

    put("in/datasets/b/data.csv", b"input,output\n1,3\n")  # same size, new content: the ETag tells
    filesystem().rm("p2m/in/datasets/a/README.md")
    again = fetch("s3://p2m/in/datasets", tmp_path, "datasets_dir")
    assert again == local and (local / "b" / "data.csv").read_bytes() == b"input,output\n1,3\n"
    assert not (local / "a" / "README.md").exists()
    # Unchanged files are not written again, so fingerprints built from mtimes (cache keys) stay the same.
    assert (local / "a" / "train.jsonl").stat().st_mtime_ns == stamps[local / "a" / "train.jsonl"]


def test_fetch_inputs_replaces_urls_and_messages_name_them(tmp_path, s3):
    put("in/test.jsonl", b'{"input": "one", "output": "1"}\n')
    overrides = {
        "evaluation": {"eval_data": "s3://p2m/in/test.jsonl", "max_new_tokens": 8},
        "datasets_dir": "/a/local/folder",
    }
    local, fetched = fetch_inputs(overrides, tmp_path)
    copy = local["evaluation"]["eval_data"]
    assert copy.endswith("test.jsonl") and Path(copy).read_text() == '{"input": "one", "output": "1"}\n'
    assert local["datasets_dir"] == "/a/local/folder" and local["evaluation"]["max_new_tokens"] == 8
    assert overrides["evaluation"]["eval_data"] == "s3://p2m/in/test.jsonl"  # the caller's dict is left as it was
    assert (
        in_user_terms(f"--eval-data: {copy}, line 2: not valid JSON", fetched)
        == "--eval-data: s3://p2m/in/test.jsonl, line 2: not valid JSON"
    )


@pytest.mark.parametrize(
    "url, error, words",
    [
        ("s3://p2m/in/nothing-here.jsonl", BadInputError, "does not exist"),
        ("s3://no-such-bucket/x.jsonl", P2MError, "s3://no-such-bucket/x.jsonl"),
        ("nosuchscheme://x/y.jsonl", P2MError, "cannot open"),
    ],
)
def test_a_bad_input_url_says_which(tmp_path, s3, url, error, words):
    with pytest.raises(error, match=words):
        fetch(url, tmp_path, "eval_data")


def test_the_prompt_is_pasted_or_a_file_or_a_url_exactly_one(tmp_path, s3):
    put("prompts/numbers.yaml", YAML_PROMPT.encode())
    pasted = read_run_prompt("", YAML_PROMPT, 100_000)
    from_url = read_run_prompt("s3://p2m/prompts/numbers.yaml", None, 100_000)
    from_file = read_run_prompt(str(EXAMPLE), "  \n", 100_000)  # blank text counts as not given
    assert pasted.spec.instruction.startswith("Convert the number") and pasted.spec.demonstrations[0].output == "342"
    assert prompt_identity(pasted) == prompt_identity(from_url) == prompt_identity(from_file)
    with pytest.raises(BadInputError, match="given twice"):
        read_run_prompt(str(EXAMPLE), YAML_PROMPT, 100_000)
    with pytest.raises(BadInputError, match="no prompt: paste the prompt"):
        read_run_prompt("", "", 100_000)
    put("prompts/broken.yaml", b"instruction: Reverse it.\ndemonstrations:\n  - input: [abc\n")
    with pytest.raises(BadInputError, match="prompt file s3://p2m/prompts/broken.yaml, line 3 is not valid YAML"):
        read_run_prompt("s3://p2m/prompts/broken.yaml", None, 100_000)
    with pytest.raises(BadInputError, match="does not exist"):
        read_run_prompt("s3://p2m/prompts/missing.txt", None, 100_000)


def test_pasted_text_gets_the_checks_a_prompt_file_gets(tmp_path):
    assert (
        prompt_from_text("Classify the ticket.\n\nInput: charged twice\nOutput: billing\n").spec is None
    )  # free text: parsed later
    with pytest.raises(BadInputError, match="the pasted prompt is empty"):
        prompt_from_text(" \n\t ")
    with pytest.raises(BadInputError, match="P2M_PARSE__MAX_PROMPT_CHARS"):
        prompt_from_text("Classify.\n" + "Input: x\nOutput: y\n" * 200, max_chars=1000)
    with pytest.raises(BadInputError, match="the pasted prompt: demonstration 1 needs `input:` and `output:`"):
        prompt_from_text("instruction: Reverse.\ndemonstrations:\n  - input: abc\n")
    (tmp_path / "p.yaml").write_text("instruction: Reverse.\ndemonstrations:\n  - input: abc\n")
    with pytest.raises(BadInputError, match="p.yaml: demonstration 1 needs"):  # the same check, naming the file
        read_run_prompt(str(tmp_path / "p.yaml"), None, 100_000)


def test_a_run_without_out_dir_is_named_from_its_prompt(tmp_path):
    numbers = prompt_from_text(YAML_PROMPT)
    japanese = prompt_from_text("英語で書かれた数を数字に直してください。\n\nthree => 3\n")
    name = run_name(numbers)
    assert name.startswith("convert-the-number-written-in-english") and name.endswith(prompt_identity(numbers)[:8])
    assert run_name(japanese).startswith("three-3-")  # the words it has in ASCII
    assert run_name(prompt_from_text("数字に直してください。")).startswith("prompt-")
    assert run_name(prompt_from_text(YAML_PROMPT.replace("342", "343"))) != name  # another task, another folder

    local = run_location("", numbers, tmp_path / "home")
    assert (
        local.run_dir == tmp_path / "home" / "runs" / name and local.url is None and local.shown == str(local.run_dir)
    )
    shared = run_location("", numbers, tmp_path / "home", storage_url="s3://team/p2m")
    assert shared.run_dir == local.run_dir and shared.shown == f"s3://team/p2m/runs/{name}"  # mirrored there
    rooted = run_location("", numbers, tmp_path / "home", runs_root="s3://team/runs/")
    assert (
        rooted.url == rooted.remote == f"s3://team/runs/{name}"
        and rooted.run_dir.parent == tmp_path / "home" / "remote-runs"
    )
    given = run_location(str(tmp_path / "mine"), numbers, tmp_path / "home", runs_root="s3://team/runs")
    assert given.run_dir == tmp_path / "mine" and given.url is None
    with pytest.raises(BadInputError, match="no run folder given"):
        run_location("", None, tmp_path / "home")


def test_a_run_folder_url_holding_other_files_is_refused_before_download(tmp_path, s3):
    put("elsewhere/notes.txt", b"someone's notes")
    location = run_location("s3://p2m/elsewhere", None, tmp_path)
    with pytest.raises(BadInputError, match="s3://p2m/elsewhere holds files that are not a p2m run"):
        pull_run(location)
    assert not location.run_dir.exists()
    put("runs/r1/run.json", json.dumps({"prompt_hash": "abc"}).encode())
    put("runs/r1/model/config.json", b"{}")
    run = run_location("s3://p2m/runs/r1", None, tmp_path)
    assert pull_run(run) and (run.run_dir / "model" / "config.json").exists()
    assert not pull_run(run)  # already here
    assert os.listdir(run.run_dir) and run.shown == "s3://p2m/runs/r1"
