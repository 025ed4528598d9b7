"""The stages as Prefect tasks: retries, input-based caching (`p2m.flows.run.cache_keys`), persisted results.

Stages pass paths and hashes between each other, never large objects.
"""

from __future__ import annotations

from pathlib import Path

from p2m.flows.run.cache_keys import stage_cache_key
from p2m.flows.run.progress import GenerationProgress
from p2m.tasks.core.aio import run_sync
from p2m.tasks.core.config import (
    EvalConfig,
    GenerationConfig,
    ParseConfig,
    ProcessConfig,
    RetrievalConfig,
    StudentConfig,
    TrainConfig,
)
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.run_store import artifact_ref, disk_full_error, rows_to_dataset, save_dataset, write_json
from p2m.tasks.core.spec import PromptFile, PromptSpec
from p2m.tasks.report.plots import plot_rounds
from p2m.tasks.report.render import write_model_card
from p2m.tasks.stages import demo, evaluate, generate, parse, process, retrieve_datasets, retrieve_model, train
from p2m.tasks.storage.datafiles import read_inputs
from p2m.tasks.teacher.handle import Teacher
from prefect import task
from prefect.tasks import exponential_backoff


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retrying cannot fix bad input, a bad config or a missing key: fail at once with the message.

    P2MError covers those, and a teacher that stayed down past its own time budget (the LLM
    client has retried by then); nor can it fix a full disk. `_sync=True`: called from an async
    task's engine, `result()` would otherwise hand back a coroutine and every error would look retryable.
    """
    error = state.result(raise_on_failure=False, _sync=True)
    return not isinstance(error, P2MError) and disk_full_error(error, Path.cwd()) is None


def stage(work_module, retries: int = 2, **kwargs):
    """The decorator every stage task uses: retries, and the cache key of `p2m.flows.run.cache_keys`."""
    return lambda fn: task(
        fn,
        cache_key_fn=stage_cache_key(work_module.__name__, fn),
        persist_result=True,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.2,
        retry_condition_fn=retry_unless_user_error,
        **kwargs,
    )


@stage(parse)
def parse_task(prompt: PromptFile, cfg: ParseConfig, run_dir: Path, teacher: Teacher) -> PromptSpec:
    """Parse the prompt (the flow has claimed the run folder for it) and write spec.json."""
    llm = (
        teacher.client(run_dir / "parse.jsonl") if prompt.spec is None else teacher.lazy_client(run_dir / "parse.jsonl")
    )
    spec = parse.parse_prompt(prompt, llm, kind=cfg.kind, labels=cfg.label_list())
    write_json(run_dir / "spec.json", spec.model_dump())
    return spec


@stage(retrieve_datasets)
def rank_datasets_task(
    spec: PromptSpec,
    cfg: RetrievalConfig,
    datasets_dir: Path | None,
    datasets_index: Path | None,
    sources_fingerprint: str,
) -> list[dict]:
    """The top candidates with what a person needs to choose: description, columns, sample rows."""
    records, embeddings, encoder = retrieve_datasets.dataset_candidates(datasets_dir, datasets_index)
    by_name = {r.name: r for r in records}
    ranked, _ = retrieve_datasets.top_candidates(spec, records, cfg.top_k, embeddings, encoder)
    return [
        c
        | {
            "description": by_name[c["name"]].description[:500],
            "columns": by_name[c["name"]].columns,
            "sample_rows": by_name[c["name"]].sample_rows[:2],
            "gated": by_name[c["name"]].gated,
        }
        for c in ranked
    ]


@stage(retrieve_datasets)
def retrieve_datasets_task(
    spec: PromptSpec,
    cfg: RetrievalConfig,
    datasets_dir: Path | None,
    datasets_index: Path | None,
    sources_fingerprint: str,
    run_dir: Path,
    teacher: Teacher,
) -> dict:
    """Choose, map and load a dataset; the teacher is asked only for columns whose names say nothing."""
    record = retrieve_datasets.retrieve_dataset(
        spec,
        cfg,
        datasets_dir,
        run_dir,
        llm=teacher.lazy_client(run_dir / "retrieve_datasets.jsonl"),
        index_path=datasets_index,
    )
    return {"chosen": record["chosen"], "rows": record["rows"], **artifact_ref(run_dir / "retrieved")}


@stage(generate, retries=1)
async def generate_batch_task(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    accepted: list[dict],
    aspects: list[str],
    batch_index: int,
    temperature: float,
    max_requests: int,
    teacher_id: str,
) -> generate.BatchResult:
    """One generation batch; replies come from the request cache when they were paid for before."""
    return await generate.generate_batch(llm, spec, cfg, accepted, aspects, batch_index, temperature, max_requests)


@stage(generate)
def generate_task(
    spec: PromptSpec, cfg: GenerationConfig, run_dir: Path, teacher: Teacher, inputs_hash: str = ""
) -> dict:
    """Generate examples into `generated/` (and label the user's `cfg.inputs`, whose content
    `inputs_hash` keys); `generation.jsonl` logs every request, `generation.json` the outcome."""
    rows: list[dict] = []
    report_dict: dict = {"accepted": 0, "stop_reason": "generation skipped (--num-examples 0)"}
    if cfg.num_examples > 0 or cfg.inputs:
        llm = teacher.client(run_dir / "generation.jsonl")
        inputs = read_inputs(cfg.inputs, cfg.max_inputs) if cfg.inputs else []

        async def run_batch(llm, spec, cfg, accepted, aspects, batch_index, temperature, max_requests):
            return await generate_batch_task(
                llm, spec, cfg, list(accepted), aspects, batch_index, temperature, max_requests, teacher.identity
            )

        report = generate.GenerationReport()
        try:
            with GenerationProgress(cfg.num_examples + len(inputs)) as progress:
                quick = (
                    generate.quick_classifier_student(spec, cfg, teacher.settings.home)
                    if cfg.rounds > 1 and spec.kind == "classification"
                    else None
                )
                run_sync(generate.make_examples(llm, spec, cfg, run_batch, progress.update, report, inputs, quick))
        except BaseException as e:  # the counts so far are kept; the answered requests are in the request cache
            report.usage = llm.usage()
            write_json(run_dir / "generation.json", report.as_dict() | {"failed": str(e) or e.__class__.__name__})
            raise
        rows, report_dict = report.examples, report.as_dict()
        if not rows:  # nothing to cache: a re-run, once the teacher answers, must ask it again
            failure = (
                f"the teacher gave no usable example ({report.stop_reason}; rejected: "
                f"{dict(report.rejected) or 'none'}; {llm.meter.failures()}); see {run_dir / 'generation.jsonl'}, "
                "fix the teacher or the prompt and run the same command again"
            )
            write_json(run_dir / "generation.json", report_dict | {"failed": failure})
            raise P2MError(failure)
    rows = [r | {"source": r.get("source", "generated")} for r in rows]
    save_dataset(rows_to_dataset(rows, ("input", "output", "source")), run_dir / "generated")
    if report_dict.get("rounds"):
        plot_rounds(report_dict["rounds"], run_dir / "generation_rounds.png")
    write_json(run_dir / "generation.json", report_dict)
    return {**report_dict, **artifact_ref(run_dir / "generated")}


@stage(retrieve_model)
def retrieve_model_task(
    spec: PromptSpec,
    cfg: StudentConfig,
    models_dir: Path | None,
    models_index: Path | None,
    sources_fingerprint: str,
    run_dir: Path,
    teacher: Teacher,
) -> dict:
    """Choose the student and write model_choice.json; the teacher writes the HyDE card unless the choice is forced."""
    llm = None if cfg.model else teacher.client(run_dir / "retrieve_model.jsonl")
    return retrieve_model.choose_model(spec, cfg, models_dir, run_dir, llm, index_path=models_index)


@stage(process)
def process_task(spec: PromptSpec, retrieved: dict, generated: dict, cfg: ProcessConfig, run_dir: Path) -> dict:
    """Train / validation / test splits from the retrieved and generated artifacts (refs)."""
    record = process.make_splits(spec, Path(retrieved["path"]), Path(generated["path"]), cfg, run_dir)
    return {**record, **artifact_ref(run_dir / "splits")}


@stage(train, retries=1)
def train_task(splits: dict, choice: dict, instruction: str, cfg: TrainConfig, run_dir: Path, home: Path) -> dict:
    """`splits` is an artifact ref ({"path", "hash"}); returns the training record plus the model's ref."""
    record = train.train_student(Path(splits["path"]), choice, instruction, cfg, run_dir, home)
    return {**record, **artifact_ref(run_dir / "model")}


@stage(evaluate)
def evaluate_task(
    spec: PromptSpec,
    splits: dict,
    model: dict,
    architecture: str,
    cfg: EvalConfig,
    eval_data_hash: str,
    run_dir: Path,
    teacher: Teacher,
) -> dict:
    """`splits` and `model` are artifact refs; writes the model card; returns metrics.json's content."""
    llm = teacher.client(run_dir / "teacher_baseline.jsonl") if cfg.teacher_baseline else None
    metrics = evaluate.evaluate_run(
        spec, Path(splits["path"]), Path(model["path"]), architecture, cfg, run_dir, llm, teacher.title()
    )
    write_model_card(run_dir, instruction=spec.instruction)
    return metrics


@stage(demo)
def publish_demo_task(run_dir: Path, model: dict) -> dict:
    """Start the demo on a free port, check that it answers, stop it; demo.json says how to serve it."""
    return demo.check_demo(run_dir)


def ref(result: dict) -> dict:
    """The artifact ref inside a stage result: stages downstream are keyed on it alone."""
    return {"path": result["path"], "hash": result["hash"]}
