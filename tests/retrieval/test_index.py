import json
import shutil

from p2m.tasks.core.config import RetrievalConfig
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.retrieval.index import (
    build_dataset_index,
    hub_dataset_records,
    load_dataset_index,
    read_index,
    refresh_indexes,
)
from p2m.tasks.retrieval.registry import scan_datasets
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.stages.retrieve_datasets import fit_similarity, retrieve_dataset

from tests.conftest import DATASETS, EXAMPLE, REPO

SPEC = parse_prompt(read_prompt_file(EXAMPLE))


def test_index_build_reuses_embeddings_and_retrieval_reads_it(tmp_path):
    import numpy as np
    from p2m.tasks.retrieval.encoders import get_encoder

    first = refresh_indexes(tmp_path, DATASETS, None)  # the static MiniLM by default
    assert first["datasets"]["count"] == 4 and first["datasets"]["embedded"] == 4
    header, rows = read_index(tmp_path / "datasets.jsonl")
    assert header["index"] == "datasets" and header["built"] and header["encoder"] == "minilm-static"
    records, matrix, _ = load_dataset_index(tmp_path / "datasets.jsonl")
    # Stored rows are the encoder's unit vectors of each description (float16 on disk).
    assert matrix.shape == (4, 256)
    assert np.allclose(matrix, get_encoder("minilm-static").encode([r.description for r in records]), atol=2e-3)
    again = build_dataset_index(scan_datasets(DATASETS), tmp_path / "datasets.jsonl", ["x"])
    assert again["embedded"] == 0 and again["reused"] == 4  # only changed descriptions are embedded
    record = retrieve_dataset(
        SPEC, RetrievalConfig(max_rows=10), None, tmp_path / "run", index_path=tmp_path / "datasets.jsonl"
    )
    # Ranked with static embeddings, but the fit threshold is checked on the transformer's similarity.
    chosen = next(r for r in records if r.name == "number_words")
    assert (
        record["chosen"] == "number_words" and f"with similarity {fit_similarity(SPEC, chosen)} >=" in record["reason"]
    )
    assert read_index(tmp_path / "models.jsonl")[1][0]["name"] == "smollm2-135m-instruct"

    # Another encoder: everything is embedded again, the old embeddings file is removed.
    full = build_dataset_index(scan_datasets(DATASETS), tmp_path / "datasets.jsonl", ["x"], encoder="minilm")
    assert full["embedded"] == 4 and load_dataset_index(tmp_path / "datasets.jsonl")[1].shape == (4, 384)
    assert len(list(tmp_path.glob("datasets.*.npy"))) == 1
    record = retrieve_dataset(
        SPEC, RetrievalConfig(max_rows=10), None, tmp_path / "run2", index_path=tmp_path / "datasets.jsonl"
    )
    assert record["chosen"] == "number_words"


def test_mirror_of_a_dataset_is_collapsed_and_unnamed_columns_are_mapped_by_the_teacher(tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(DATASETS, root)
    mirror = root / "number_words_mirror"
    shutil.copytree(root / "number_words", mirror)
    (mirror / "README.md").write_text((mirror / "README.md").read_text().replace("downloads: 1200", "downloads: 3"))
    # A dataset whose column names say nothing: the teacher maps them.
    odd = root / "numerals"
    odd.mkdir()
    (odd / "README.md").write_text("---\npretty_name: Numerals\n---\nNumber words and their digits.\n")
    (odd / "train.jsonl").write_text("\n".join(json.dumps({"a": f"n{i}", "b": str(i)}) for i in range(20)))

    class Teacher:
        def complete(self, messages, **kw):
            return ['{"input": "a", "output": "b"}']

    forced = RetrievalConfig(dataset="numerals", max_rows=5)
    record = retrieve_dataset(SPEC, forced, root, tmp_path / "run", llm=Teacher())
    assert record["chosen"] == "numerals" and record["columns"] == {"input": "a", "output": "b"}
    assert record["columns_mapped"] == "by the teacher LLM"
    record = retrieve_dataset(SPEC, RetrievalConfig(max_rows=5), root, tmp_path / "run2")
    assert {"name": "number_words_mirror", "reason": "near-duplicate of number_words (fewer downloads)"} in record[
        "skipped"
    ]
    assert record["chosen"] == "number_words"


def test_hub_builder_reads_the_hub_api(monkeypatch):
    import huggingface_hub.constants
    from fastapi import FastAPI

    from tests.fake_llm_server import serve_app

    app = FastAPI()
    reply = json.loads((REPO / "tests" / "fixtures" / "hub_datasets_reply.json").read_text())

    @app.get("/api/datasets")
    def datasets(limit: int = 10, sort: str = "", full: bool = False):
        assert sort == "downloads" and full
        return reply[:limit]

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with serve_app(app) as url:
        records = hub_dataset_records(limit=10, endpoint=url)
    squad, tickets = records
    assert squad.name == "rajpurkar/squad" and squad.path == "hub:rajpurkar/squad" and squad.downloads == 101234
    assert squad.columns == ["id", "question", "answers"] and squad.license == "cc-by-sa-4.0" and not squad.gated
    assert "question-answering" in squad.description
    assert tickets.gated  # "manual" approval: filtered out by retrieval with its reason


def test_nothing_found_in_an_empty_index(tmp_path):
    build_dataset_index([], tmp_path / "d.jsonl", [])
    record = retrieve_dataset(
        PromptSpec(instruction="x"), RetrievalConfig(), None, tmp_path / "run", index_path=tmp_path / "d.jsonl"
    )
    assert record["chosen"] is None and record["reason"] == "no candidate datasets"
