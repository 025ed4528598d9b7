"""Generation on its own: the flow the nightly regeneration deployment runs.

Uses the same stage tasks as the full pipeline (parse, generate), so a pipeline run after a
generation run with the same prompt and settings finds generation cached.
"""

from __future__ import annotations

import datetime

from prefect import flow

from p2m.flows.tracking import flow_run, with_options
from p2m.tasks.stages import generate_task, parse_task


@flow(name="p2m-generate")
def generate_flow(prompt_file: str, out_dir: str, num_examples: int | None = None, fresh_seed: bool = False,
                  overrides: dict | None = None) -> dict:
    """Parse `prompt_file` and generate examples into `out_dir/generated`; returns the generation report.

    Args:
        prompt_file: Path of the prompt file.
        out_dir: Folder for generated/ and generation.jsonl.
        num_examples: Examples to generate.
        fresh_seed: Seed generation with today's date, so a nightly run samples new data instead of replaying the cache.
        overrides: Any other settings, nested by section as in .env.example.
    """
    seed = int(datetime.date.today().strftime("%Y%m%d")) if fresh_seed else None
    overrides = with_options(overrides, generation={"num_examples": num_examples, "seed": seed})
    with flow_run(prompt_file, out_dir, overrides) as run:
        spec = run.stages.run("parse", parse_task, "spec.json", prompt=run.prompt, run_dir=run.run_dir, teacher=run.teacher)
        report = run.stages.run("generate", generate_task, "generated", spec=spec, cfg=run.settings.generation,
                                run_dir=run.run_dir, teacher=run.teacher)
    return report
