"""A person chooses the dataset in the Prefect UI: the run pauses with the candidates and resumes.

Used by the pipeline when `P2M_RETRIEVAL__CHOOSE=ui`. The pause shows a form (the fields of
`DatasetChoice`, pre-filled with the best candidate) above a table of candidates with scores,
columns and sample rows. The answer becomes retrieval settings: a forced dataset and, when given,
its column mapping. No answer before the timeout: the automatic choice.
"""

from __future__ import annotations

import json

from p2m.tasks.core.config import RetrievalConfig
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

POLL_SECONDS = 2


class DatasetChoice(RunInput):
    dataset: str = Field(description="A candidate's name; 'none' for generated data only; 'auto' to let p2m choose.")
    input_column: str | None = Field(None, description="The column holding the input (empty: p2m maps it).")
    output_column: str | None = Field(None, description="The column holding the output (empty: p2m maps it).")


def candidates_markdown(candidates: list[dict]) -> str:
    lines = [
        "Choose the training dataset for this run.",
        "",
        "| dataset | similarity | columns | sample row |",
        "|---|---|---|---|",
    ]
    for c in candidates:
        sample = json.dumps(c["sample_rows"][0], ensure_ascii=False)[:120].replace("|", "/") if c["sample_rows"] else ""
        gated = " (gated)" if c["gated"] else ""
        lines.append(f"| {c['name']}{gated} | {c['similarity']} | {', '.join(c['columns'])} | {sample} |")
    return "\n".join(lines)


def ask_for_dataset(candidates: list[dict], cfg: RetrievalConfig) -> RetrievalConfig:
    """Pause until a person answers (or the timeout passes); returns the retrieval settings to use."""
    default = candidates[0]["name"] if candidates else "none"
    form = DatasetChoice.with_initial_data(description=candidates_markdown(candidates), dataset=default)
    try:
        choice = pause_flow_run(wait_for_input=form, timeout=cfg.choose_timeout, poll_interval=POLL_SECONDS)
    except TimeoutError:
        return cfg
    if choice is None or choice.dataset == "auto":
        return cfg
    return cfg.model_copy(
        update={
            "dataset": choice.dataset,
            "input_column": choice.input_column or None,
            "output_column": choice.output_column or None,
        }
    )
