"""Values reach training and scoring exactly as written, whatever the file format."""

import csv
import json

import pytest
from p2m.tasks.core.config import ProcessConfig, RetrievalConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import dataset_rows
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.retrieval.registry import scan_datasets
from p2m.tasks.stages.parse import read_prompt_file
from p2m.tasks.stages.process import make_splits
from p2m.tasks.stages.retrieve_datasets import retrieve_dataset
from p2m.tasks.storage.datafiles import DataFileError, read_pairs, read_rows

AWKWARD = [
    "007",
    "1.50",
    "true",
    "2049-07-05",
    "NULL",
    "",
    " padded ",
    "1e3",
    "None",
    "nan",
    "日本語",
    'say "hi", twice',
]
ROWS = [{"input": f"date {i} July 5, 2049", "output": value} for i, value in enumerate(AWKWARD)]


def write(path, rows):
    """`rows` in the file format its suffix names."""
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["input", "output"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_awkward_strings_reach_training_rows_and_test_sets_unchanged(tmp_path, suffix):
    datasets_dir = tmp_path / "datasets"
    folder = datasets_dir / "dates"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\ntags: dates\ndownloads: lots\n---\nDates written out, and their ISO form.\n"
    )
    write(folder / f"train{suffix}", ROWS * 3)  # enough rows for train, validation and test splits
    spec = PromptSpec(instruction="Rewrite the date in ISO form.")

    retrieved = retrieve_dataset(spec, RetrievalConfig(dataset="dates"), datasets_dir, tmp_path)
    assert retrieved["chosen"] == "dates"
    assert sorted({r["output"] for r in dataset_rows(tmp_path / "retrieved")}) == sorted(AWKWARD)
    make_splits(spec, tmp_path / "retrieved", None, ProcessConfig(test_fraction=0.3, val_fraction=0.1), tmp_path)
    import datasets

    splits = datasets.load_from_disk(str(tmp_path / "splits"))
    kept = {(r["input"], r["output"]) for name in ("train", "validation", "test") for r in splits[name]}
    assert kept == {(r["input"], r["output"]) for r in ROWS}

    test_file = write(tmp_path / f"test{suffix}", ROWS)
    assert read_pairs(test_file) == ROWS


def test_json_numbers_keep_their_digits_and_nested_values_stay_json(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"input": 1.50, "output": [1, 2.0, "x"], "missing": null, "flag": true}\n')
    assert read_rows(path) == [{"input": "1.50", "output": '[1, 2.0, "x"]', "missing": None, "flag": "true"}]


def test_yaml_demonstrations_are_kept_as_written(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "instruction: Normalise it.\ndemonstrations:\n  - input: July 5, 2049\n    output: 2049-07-05\n"
        "  - input: seven\n    output: 007\n  - input: nothing\n    output: NULL\n  - input: yes\n    output: 1.50\n"
    )
    demos = read_prompt_file(path).spec.demonstrations
    assert [(d.input, d.output) for d in demos] == [
        ("July 5, 2049", "2049-07-05"),
        ("seven", "007"),
        ("nothing", "NULL"),
        ("yes", "1.50"),
    ]


@pytest.mark.parametrize(
    "content, words",
    [
        ('input,output\n"a,b\nc,d\n', "line"),
        ("input,output\na,b,c\n", "3 fields"),
        ('{"input": "a", "output": "b"}\n{"input": \n', "line 2"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_file_that_cannot_be_read_completely_is_an_error_naming_the_line(tmp_path, content, words):
    path = tmp_path / ("d.csv" if content.startswith("input,") else "d.jsonl" if content.startswith("{") else "d.json")
    path.write_text(content)
    with pytest.raises(DataFileError, match=words):
        read_rows(path)


def test_a_dataset_with_a_broken_file_is_passed_over_with_the_reason(tmp_path):
    folder = tmp_path / "datasets" / "broken"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("---\ntags: [numbers]\ngated: false\n---\nNumbers.\n")
    (folder / "train.csv").write_text('input,output\n"one,1\n')
    (record,) = scan_datasets(tmp_path / "datasets")
    assert record.problem and "line" in record.problem and not record.gated
    # Named with --dataset, it is an error that names the file (a search only passes it over).
    with pytest.raises(BadInputError, match=r"--dataset broken cannot be used: .*train\.csv, line 2"):
        retrieve_dataset(
            PromptSpec(instruction="Numbers."), RetrievalConfig(dataset="broken"), tmp_path / "datasets", tmp_path
        )


def test_a_model_folder_with_a_broken_config_is_left_out(tmp_path):
    from p2m.tasks.retrieval.registry import scan_models

    (tmp_path / "models" / "broken").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "config.json").write_text("{not json")
    assert "broken" not in {r.name for r in scan_models(tmp_path / "models")}
