"""The stages as Prefect tasks: retries, input-based caching, persisted results.

Cache keys (see ../shared/PREFECT.md for the traps) are built by `stage_cache_key` from:
the task's name (so two tasks with equal inputs never share a record), a hash of the source of
the module that does the stage's work and of the p2m modules it uses (editing a helper re-runs
the stage, which TASK_SOURCE alone would miss), the prompt templates, and the task's parameters. Upstream results are passed
as small dicts that carry a content hash of their artifact, so a changed upstream artifact
changes every downstream key. The teacher enters keys as its identity (kind and model), not its
URL, whose port changes from run to run.

Stages pass paths and hashes between each other, never large objects.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from p2m.tasks import demo, evaluate_model, generate, parse, process, retrieve_datasets, retrieve_model, train
from p2m.tasks.config import EvalConfig, GenerationConfig, LimitsConfig, ProcessConfig, RetrievalConfig, TrainConfig
from p2m.tasks.errors import P2MError
from p2m.tasks.llm import run_sync
from p2m.tasks.prompts import templates_hash
from p2m.tasks.run_store import artifact_ref, rows_to_dataset, write_json
from p2m.tasks.teacher import Teacher

CACHE_VERSION = "1"  # bump to invalidate every cached stage at once
MODEL_CARD = ("README.md",)  # rewritten by evaluation with the scores: not part of the model's identity


def _jsonable(value):
    """How a task parameter enters a cache key."""
    if isinstance(value, Teacher):
        return value.identity
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    if hasattr(value, "__dict__"):  # a live handle (the LLM client): what it answers is keyed elsewhere
        return type(value).__name__
    return str(value)


def code_hash(module) -> str:
    """Hash of a stage module's source and of the p2m modules it uses directly.

    Settings are left out (p2m.tasks.config): their values enter the keys as parameters.
    """
    used = {module.__name__}
    for value in vars(module).values():
        name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("p2m.tasks.") and name != "p2m.tasks.config":
            used.add(name)
    h = hashlib.sha256()
    for name in sorted(used):
        h.update(inspect.getsource(sys.modules[name]).encode())
    return h.hexdigest()[:12]


def stage_cache_key(work_module, templates: tuple[str, ...] = ()):
    """A Prefect cache_key_fn for a task whose work lives in `work_module`."""
    code = code_hash(work_module) + (templates_hash(*templates) if templates else "")

    def key(context, parameters: dict) -> str:
        payload = json.dumps(
            [context.task.name, CACHE_VERSION, code, parameters], sort_keys=True, default=_jsonable, ensure_ascii=False
        )
        return f"{context.task.name}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"

    return key


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retrying cannot fix bad input, a bad config or a missing key: fail at once with the message.

    P2MError covers those, and a teacher that stayed down past its own time budget (the LLM
    client has retried by then). `_sync=True`: called from an async task's engine, `result()`
    would otherwise hand back a coroutine and every error would look retryable.
    """
    return not isinstance(state.result(raise_on_failure=False, _sync=True), P2MError)


def stage(work_module, templates: tuple[str, ...] = (), retries: int = 2, **kwargs):
    """The decorator every stage task uses."""
    return task(
        cache_key_fn=stage_cache_key(work_module, templates),
        persist_result=True,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.2,
        retry_condition_fn=retry_unless_user_error,
        **kwargs,
    )


@stage(parse, templates=("parse_prompt",))
def parse_task(prompt: parse.PromptFile, run_dir: Path, teacher: Teacher) -> dict:
    """Parse the prompt (the flow has claimed the run folder for it), write spec.json; returns the spec as a dict."""
    llm = None if prompt.spec is not None else teacher.client(run_dir / "parse.jsonl")
    spec = parse.parse_prompt(prompt, llm)
    write_json(run_dir / "spec.json", spec.model_dump())
    return spec.model_dump()


@stage(retrieve_datasets)
def rank_datasets_task(spec: dict, cfg: RetrievalConfig, datasets_dir: Path | None, datasets_index: Path | None, sources_fingerprint: str) -> list[dict]:
    """The top candidates with what a person needs to choose: description, columns, sample rows."""
    records, embeddings, encoder = retrieve_datasets.dataset_candidates(datasets_dir, datasets_index)
    by_name = {r.name: r for r in records}
    ranked, _ = retrieve_datasets.top_candidates(parse.PromptSpec(**spec), records, cfg.top_k, embeddings, encoder)
    return [c | {"description": by_name[c["name"]].description[:500], "columns": by_name[c["name"]].columns,
                 "sample_rows": by_name[c["name"]].sample_rows[:2], "gated": by_name[c["name"]].gated} for c in ranked]


@stage(retrieve_datasets, templates=("map_columns", "rerank_datasets"))
def retrieve_datasets_task(spec: dict, cfg: RetrievalConfig, datasets_dir: Path | None, datasets_index: Path | None, sources_fingerprint: str,
                           run_dir: Path, seed: int, teacher: Teacher) -> dict:
    """Choose, map and load a dataset; the teacher is asked only for columns whose names say nothing."""
    record = retrieve_datasets.retrieve_dataset(parse.PromptSpec(**spec), cfg, datasets_dir, run_dir, seed,
                                                llm=teacher.lazy_client(run_dir / "retrieve_datasets.jsonl"), index_path=datasets_index)
    return {"chosen": record["chosen"], "rows": record["rows"], **artifact_ref(run_dir / "retrieved")}


@stage(generate, retries=1)
async def generate_batch_task(llm, spec: parse.PromptSpec, cfg: GenerationConfig, accepted: list[dict], batch_index: int,
                              temperature: float, max_requests: int, teacher_id: str) -> generate.BatchResult:
    """One generation batch; replies come from the request cache when they were paid for before."""
    return await generate.generate_batch(llm, spec, cfg, accepted, batch_index, temperature, max_requests)


@stage(generate, templates=("generate_example", "answer_input"))
def generate_task(spec: dict, cfg: GenerationConfig, limits: LimitsConfig, run_dir: Path, teacher: Teacher) -> dict:
    """Generate examples into `generated/`; `generation.jsonl` logs every request, `generation.json` the outcome."""
    from p2m.tasks.progress import GenerationProgress

    prompt_spec = parse.PromptSpec(**spec)
    rows: list[dict] = []
    report_dict: dict = {"accepted": 0, "stop_reason": "generation skipped (--num-examples 0)"}
    if cfg.num_examples > 0:
        llm = teacher.client(run_dir / "generation.jsonl")

        async def run_batch(llm, spec, cfg, accepted, batch_index, temperature, max_requests):
            return await generate_batch_task(llm, spec, cfg, list(accepted), batch_index, temperature, max_requests, teacher.identity)

        report = generate.GenerationReport()
        try:
            with GenerationProgress(cfg.num_examples) as progress:
                run_sync(generate.generate_examples(llm, prompt_spec, cfg, limits, run_batch=run_batch, on_progress=progress.update,
                                                    report=report))
        except BaseException as e:  # the counts so far are kept; the answered requests are in the request cache
            report.usage = llm.meter.as_dict()
            write_json(run_dir / "generation.json", report.as_dict() | {"failed": str(e) or e.__class__.__name__})
            raise
        rows, report_dict = report.examples, report.as_dict()
    rows_to_dataset(rows).save_to_disk(str(run_dir / "generated"))
    write_json(run_dir / "generation.json", report_dict)
    return {**report_dict, **artifact_ref(run_dir / "generated")}


@stage(retrieve_model, templates=("hyde_model_card",))
def retrieve_model_task(spec: dict, cfg: RetrievalConfig, models_dir: Path | None, models_index: Path | None, sources_fingerprint: str,
                        run_dir: Path, teacher: Teacher) -> dict:
    # HyDE needs the teacher only when the choice is not forced.
    llm = None if cfg.model else teacher.client(run_dir / "retrieve_model.jsonl")
    return retrieve_model.choose_model(parse.PromptSpec(**spec), cfg, models_dir, run_dir, llm, index_path=models_index)


@stage(process)
def process_task(spec: dict, retrieved: dict, generated: dict, cfg: ProcessConfig, run_dir: Path) -> dict:
    record = process.make_splits(parse.PromptSpec(**spec), Path(retrieved["path"]), Path(generated["path"]), cfg, run_dir)
    return {**record, **artifact_ref(run_dir / "splits")}


@stage(train, retries=1)
def train_task(splits: dict, choice: dict, instruction: str, cfg: TrainConfig, run_dir: Path, home: Path) -> dict:
    """`splits` is an artifact ref ({"path", "hash"}); returns the training record plus the model's ref."""
    record = train.train_student(Path(splits["path"]), choice, instruction, cfg, run_dir, home)
    return {**record, **artifact_ref(run_dir / "model", MODEL_CARD)}


@stage(evaluate_model)
def evaluate_task(spec: dict, splits: dict, model: dict, architecture: str, cfg: EvalConfig, eval_data_hash: str, run_dir: Path, teacher: Teacher) -> dict:
    """`splits` and `model` are artifact refs; returns metrics.json's content."""
    llm = teacher.client(run_dir / "teacher_baseline.jsonl") if cfg.teacher_baseline else None
    return evaluate_model.evaluate_run(parse.PromptSpec(**spec), Path(splits["path"]), Path(model["path"]), architecture, cfg, run_dir, llm)


@stage(demo)
def publish_demo_task(run_dir: Path, model: dict) -> dict:
    return demo.check_demo(run_dir)


def sources_fingerprint(*roots: Path | None) -> str:
    """Cheap fingerprint of folders or index files (names, sizes, mtimes) for cache keys."""
    h = hashlib.sha256()
    for root in roots:
        if root is None or not Path(root).exists():
            continue
        files = [Path(root)] if Path(root).is_file() else sorted(p for p in Path(root).rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]



def ref(result: dict) -> dict:
    """The artifact ref inside a stage result: stages downstream are keyed on it alone."""
    return {"path": result["path"], "hash": result["hash"]}
