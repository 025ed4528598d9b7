"""Register p2m with a Prefect server: the work pools and the deployments (`p2m deploy`).

| deployment | flow | pool | schedule |
|---|---|---|---|
| p2m-pipeline/pipeline | the whole pipeline; the UI shows its parameters as a form | cpu | on demand |
| p2m-generate/nightly-regeneration | new data for a saved prompt, seeded by date | cpu | 02:00 nightly |
| p2m-index-refresh/nightly-index-refresh | rebuild the retrieval indexes | cpu | 03:00 nightly |
| p2m-train-evaluate/gpu | train + evaluate a run folder | gpu | on demand |
| p2m-publish-demo/demo | serve or replace the demo page of a run folder | cpu | on demand |

Both pools are `process` pools: a worker started on a machine runs the flows there
(`prefect worker start --pool gpu` on the GPU machine). The deployments run the code from this
folder (`from_source`), so workers need the same checkout (or the Docker images in docker/).
The nightly deployments need to know which prompt and folders to use: without them they are
registered paused, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOLS = ("cpu", "gpu")


@dataclass
class DeploymentSpec:
    entrypoint: str
    name: str
    pool: str
    cron: str | None = None
    parameters: dict = field(default_factory=dict)
    description: str = ""
    concurrency_limit: int | None = None


def deployment_specs(nightly_prompt: str | None = None, nightly_out: str | None = None, index_out: str | None = None,
                     datasets_dir: str | None = None) -> list[DeploymentSpec]:
    """What `deploy_all` registers; nightly parameters come from the arguments."""
    return [
        DeploymentSpec("flows/pipeline.py:pipeline", "pipeline", "cpu", description="Prompt in; data, model, scores and demo out."),
        DeploymentSpec("flows/generate.py:generate_flow", "nightly-regeneration", "cpu", "0 2 * * *",
                       {"prompt_file": nightly_prompt, "out_dir": nightly_out, "fresh_seed": True} if nightly_prompt and nightly_out else {},
                       "Regenerate training data for a saved prompt every night."),
        DeploymentSpec("flows/index_refresh.py:index_refresh_flow", "nightly-index-refresh", "cpu", "0 3 * * *",
                       {"out_dir": index_out, "datasets_dir": datasets_dir} if index_out else {}, "Rebuild the retrieval indexes every night."),
        # One fine-tune per GPU at a time: more runs wait in the queue instead of sharing the card.
        DeploymentSpec("flows/train_evaluate.py:train_evaluate_flow", "gpu", "gpu", description="Train and evaluate a run folder on the GPU pool.",
                       concurrency_limit=1),
        DeploymentSpec("flows/publish_demo.py:publish_demo_flow", "demo", "cpu", description="Serve or replace the demo page for a run folder."),
    ]


def ensure_work_pools(names: tuple[str, ...] = POOLS) -> list[str]:
    """Create the process work pools that do not exist yet; returns the ones created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                created.append(name)
    return created


def deploy_all(specs: list[DeploymentSpec], source: Path = ROOT) -> dict[str, str]:
    """Register every deployment (paused when its schedule lacks parameters); returns name -> id."""
    from prefect import Flow

    ids = {}
    for spec in specs:
        flow = Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        incomplete = spec.cron is not None and not spec.parameters
        deployment_id = flow.deploy(
            name=spec.name, work_pool_name=spec.pool, cron=spec.cron, parameters=spec.parameters or None,
            description=spec.description + (" Paused: deploy again with its parameters to schedule it." if incomplete else ""),
            paused=incomplete or None, concurrency_limit=spec.concurrency_limit, build=False, push=False, print_next_steps=False, ignore_warnings=True,
        )
        ids[f"{flow.name}/{spec.name}"] = str(deployment_id)
    return ids
