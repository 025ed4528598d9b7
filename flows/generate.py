"""Generation on its own: the flow the nightly regeneration deployment runs.

Uses the same stage tasks as the full pipeline (parse, generate), so a pipeline run after a
generation run with the same prompt and settings finds generation cached.
"""

from __future__ import annotations

import datetime

from p2m.flows.run.cache_keys import file_hash
from p2m.flows.run.form import setting_parameter
from p2m.flows.run.stage_tasks import generate_task, parse_task
from p2m.flows.run.tracking import flow_run, with_options
from prefect import flow

NumExamples = setting_parameter("generation.num_examples")


@flow(name="p2m-generate")
def generate_flow(
    prompt_file: str = "",
    out_dir: str = "",
    num_examples: NumExamples = None,
    fresh_seed: bool = False,
    overrides: dict | None = None,
    prompt: str = "",
) -> dict:
    """Parse the prompt (pasted, or `prompt_file`) and generate examples into `out_dir/generated`; returns the generation report.

    Args:
        prompt_file: The prompt file: a path on the worker or a URL (s3://...). Empty when the prompt is pasted into `prompt`.
        out_dir: Folder (or URL) for generated/ and generation.jsonl. Empty: a folder named from the prompt under P2M_RUNS_ROOT.
        num_examples: Examples to generate.
        fresh_seed: Seed generation with today's date, so a nightly run samples new data instead of replaying the cache.
        overrides: Any other settings, nested by section as in .env.example.
        prompt: The prompt itself, pasted (free text or YAML); give this or prompt_file, not both.
    """  # noqa: E501 - Prefect shows each Args line as one parameter description; wrapping would add newlines
    seed = int(datetime.date.today().strftime("%Y%m%d")) if fresh_seed else None
    overrides = with_options(overrides, generation={"num_examples": num_examples, "seed": seed})
    with flow_run(prompt_file, out_dir, overrides, prompt_text=prompt) as run:
        spec = run.stages.run(
            "parse",
            parse_task,
            "spec.json",
            prompt=run.prompt,
            cfg=run.settings.parse,
            run_dir=run.run_dir,
            teacher=run.teacher,
        )
        report = run.stages.run(
            "generate",
            generate_task,
            "generated",
            spec=spec,
            cfg=run.settings.generation,
            run_dir=run.run_dir,
            teacher=run.teacher,
            inputs_hash=file_hash(run.settings.generation.inputs),
        )
    return report
