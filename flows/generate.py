"""Generation on its own: the flow the nightly regeneration deployment runs.

Uses the same stage tasks as the full pipeline (parse, generate), so a pipeline run after a
generation run with the same prompt and settings finds generation cached.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.tracking import StageTracker
from tasks.config import Settings
from tasks.parse import read_prompt_file
from tasks.stages import generate_task, parse_task
from tasks.teacher import Teacher


@flow(name="p2m-generate")
def generate_flow(prompt_file: str, out_dir: str, overrides: dict | None = None) -> dict:
    """Parse `prompt_file` and generate examples into `out_dir/generated`; returns the generation report."""
    s = Settings(**(overrides or {}))
    run_dir = Path(out_dir).resolve()
    prompt = read_prompt_file(Path(prompt_file))
    teacher = Teacher(s)
    stages = StageTracker(run_dir)
    try:
        spec = stages.run("parse", parse_task, "spec.json", prompt=prompt, prompt_file=str(prompt_file), run_dir=run_dir, teacher=teacher)
        report = stages.run("generate", generate_task, "generated", spec=spec, cfg=s.generation, limits=s.limits, run_dir=run_dir, teacher=teacher)
    finally:
        teacher.close()
        stages.finish()
    return report
