"""The full pipeline flow: prompt in; spec, data, model, scores and a checked demo out.

prompt -> parse -> retrieve datasets -+
                +-> generate ---------+-> process -> train -> evaluate -> publish demo
                +-> retrieve model ---+
"""

from __future__ import annotations

from p2m.flows.publish_demo import link_demo, serve_demo_task
from p2m.flows.run.cache_keys import file_hash, sources_fingerprint
from p2m.flows.run.choose import ask_for_dataset
from p2m.flows.run.form import setting_parameter
from p2m.flows.run.stage_tasks import (
    generate_task,
    parse_task,
    process_task,
    publish_demo_task,
    rank_datasets_task,
    ref,
    retrieve_datasets_task,
    retrieve_model_task,
)
from p2m.flows.run.tracking import flow_run, with_options
from p2m.flows.train_evaluate import train_and_evaluate, train_and_evaluate_on_deployment
from p2m.tasks.report.render import RATES
from p2m.tasks.retrieval.registry import hf_cache_models_fingerprint
from prefect import flow

NumExamples = setting_parameter("generation.num_examples")
ModelSizeCap = setting_parameter("student.model_size_cap_gb")


@flow(name="p2m-pipeline")
def pipeline(
    prompt_file: str = "",
    out_dir: str = "",
    prompt: str = "",
    num_examples: NumExamples = None,
    datasets_dir: str = "",
    models_dir: str = "",
    eval_data: str = "",
    inputs: str = "",
    model_size_cap_gb: ModelSizeCap = None,
    dataset: str = "",
    model: str = "",
    choose_dataset_in_ui: bool = False,
    publish_demo: bool = False,
    overrides: dict | None = None,
) -> dict:
    """Run every stage for the prompt (pasted, or `prompt_file`) into `out_dir`; returns the run summary.

    Stages whose inputs did not change are served from the cache. Settings not given here come
    from P2M_* variables and `.env` on the machine that runs the flow. Every path may also be a
    URL (s3://bucket/key, or any fsspec URL), read and written with the worker's credentials.

    Args:
        prompt_file: The prompt file (free text, or YAML with instruction and demonstrations): a path on the worker or a URL. Empty when the prompt is pasted below.
        out_dir: The run folder (a path on the worker or a URL); re-using it resumes the run. Empty: a folder named from the prompt under P2M_RUNS_ROOT (the summary says where).
        prompt: The prompt itself, pasted: an instruction and a few examples, as free text or as YAML (instruction:, demonstrations:). Give this or prompt_file, not both.
        num_examples: Examples to generate with the teacher (0: retrieved data only).
        datasets_dir: Folder of local datasets to retrieve from (laid out like Hugging Face dataset repos): a path on the worker or a URL.
        models_dir: Folder of student models to choose from (laid out like Hugging Face model repos): a path on the worker or a URL.
        eval_data: A real test set (JSON Lines, JSON, CSV or Parquet with input and output columns): a path on the worker or a URL; scored for student and teacher.
        inputs: Your own unlabelled inputs (JSON Lines, JSON, CSV or Parquet with an input column, or text with one input per line): a path on the worker or a URL; the teacher labels them and they lead the training data.
        model_size_cap_gb: Students larger than this are left out.
        dataset: Use this dataset ('none': generated data only); empty lets p2m choose.
        model: Use this student model; empty lets p2m choose.
        choose_dataset_in_ui: Pause when the candidates are found, and let a person choose here.
        publish_demo: Serve the trained model's demo page when the run ends (replacing the one on P2M_DEMO_PORT); its link is on the run's page.
        overrides: Any other settings, nested by section as in .env.example (e.g. {"train": {"epochs": 1}}).
    """  # noqa: E501 - Prefect shows each Args line as one parameter description; wrapping would add newlines
    overrides = with_options(
        overrides,
        generation={"num_examples": num_examples, "inputs": inputs},
        evaluation={"eval_data": eval_data},
        retrieval={"dataset": dataset, "choose": "ui" if choose_dataset_in_ui else None},
        student={"model": model, "model_size_cap_gb": model_size_cap_gb},
    )
    if datasets_dir:
        overrides["datasets_dir"] = datasets_dir
    if models_dir:
        overrides["models_dir"] = models_dir
    with flow_run(prompt_file, out_dir, overrides, prompt_text=prompt) as run:
        s, run_dir, teacher, stages = run.settings, run.run_dir, run.teacher, run.stages
        spec = stages.run(
            "parse", parse_task, "spec.json", prompt=run.prompt, cfg=s.parse, run_dir=run_dir, teacher=teacher
        )
        sources = dict(
            datasets_dir=s.datasets_dir,
            datasets_index=s.datasets_index,
            sources_fingerprint=sources_fingerprint(s.datasets_dir, s.datasets_index),
        )
        retrieval = s.retrieval
        if retrieval.choose == "ui" and not retrieval.dataset:
            candidates = stages.run(
                "rank_datasets", rank_datasets_task, "spec.json", spec=spec, cfg=retrieval, **sources
            )
            retrieval = ask_for_dataset(candidates, retrieval)
        retrieved = stages.run(
            "retrieve_datasets",
            retrieve_datasets_task,
            "retrieved",
            spec=spec,
            cfg=retrieval,
            **sources,
            run_dir=run_dir,
            teacher=teacher,
        )
        generated = stages.run(
            "generate",
            generate_task,
            "generated",
            spec=spec,
            cfg=s.generation,
            run_dir=run_dir,
            teacher=teacher,
            inputs_hash=file_hash(s.generation.inputs),
        )
        choice = stages.run(
            "retrieve_model",
            retrieve_model_task,
            "model_choice.json",
            spec=spec,
            cfg=s.student,
            models_dir=s.models_dir,
            models_index=s.models_index,
            sources_fingerprint=sources_fingerprint(s.models_dir, s.models_index) + hf_cache_models_fingerprint(),
            run_dir=run_dir,
            teacher=teacher,
        )
        splits = stages.run(
            "process",
            process_task,
            "splits",
            spec=spec,
            retrieved=ref(retrieved),
            generated=ref(generated),
            cfg=s.process,
            run_dir=run_dir,
        )
        # The local teacher's memory (1.9 GB) goes back while the student trains; evaluation restarts it.
        teacher.close()
        if s.train_deployment:
            model, metrics = train_and_evaluate_on_deployment(run, s.train_deployment, overrides)
        else:
            model, metrics = train_and_evaluate(run, spec, ref(splits), choice)
        stages.run("publish_demo", publish_demo_task, "demo.json", run_dir=run_dir, model=model)
        if publish_demo:
            served = stages.run(
                "serve_demo",
                serve_demo_task,
                "demo_service.json",
                run_dir=str(run_dir),
                host=s.demo_host,
                port=s.demo_port,
            )
            stages.details["demo_url"] = link_demo(served, s.demo_host)
        stages.details.update(
            metrics=metrics,
            model=model["path"],
            model_name=choice["name"],
            dataset=retrieved["chosen"],
            generated=generated.get("accepted", 0),
            generation_sources=generated.get("sources"),
            generation_per_label=generated.get("per_label"),
            generation_rounds=generated.get("rounds"),
            task_kind=spec.kind,
            labels=spec.labels,
            kind_reason=spec.kind_reason,
            generation_stop=generated.get("stop_reason"),
            generation_usage=generated.get("usage"),
            generation_bounds={k: generated.get(k) for k in ("request_cap", "cost_budget_usd")},
            generation_rates={k: generated.get(k) for k in RATES},
            teacher=teacher.identity,
            teacher_title=teacher.title(),
            student_size_mb=choice.get("size_mb"),
            demo_command=f"p2m demo {run_dir}",
        )
    return run.summary
