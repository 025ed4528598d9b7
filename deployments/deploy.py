"""Register p2m with a Prefect server: the work pools and the deployments (`p2m deploy`).

| deployment | flow | pool | schedule | tags |
|---|---|---|---|---|
| p2m-pipeline/pipeline | the whole pipeline; the UI shows its parameters as a form | cpu | on demand | p2m, pipeline |
| p2m-nightly/nightly | new data (seeded by date), retrain, promotion gate, republish | cpu | 02:00 nightly | p2m, nightly, train |
| p2m-index-refresh/nightly-index-refresh | rebuild the retrieval indexes | cpu | 03:00 nightly | p2m, retrieval, nightly |
| p2m-train-evaluate/gpu | train + evaluate a run folder | gpu | on demand | p2m, train, gpu |
| p2m-publish-demo/demo | serve or replace the demo page of a run folder | cpu | on demand | p2m, demo |
| p2m-serve-student/serve | serve or replace the student's OpenAI-compatible endpoint | cpu | on demand | p2m, serve |

The tags let a team's UI filter p2m's deployments (and their runs, which carry them) from the rest.

Both pools are `process` pools: a worker started on a machine runs the flows there
(`prefect worker start --pool gpu` on the GPU machine). The deployments run the code from this
folder (`from_source`), so workers need the same checkout (or the Docker images in docker/).
The nightly deployments need to know which prompt and folders to use: without them they are
registered paused, and say so.

A worker that dies mid-run (machine lost, container evicted, `kill -9`) cannot report its run
as crashed: the run would stay `Running` for ever. Flow runs send heartbeats
(`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, 180 s by default); `ensure_crash_detection` registers the
automation Prefect documents for this ("detect zombie flows"): no heartbeat and no final state
for three beats marks the run `Crashed`, and the UI's Retry button (or `prefect flow-run retry`)
re-runs it with every finished stage served from the cache.
"""  # noqa: E501 (markdown table rows cannot be wrapped)

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOLS = ("cpu", "gpu")
CRASH_AUTOMATION = "p2m: mark runs without heartbeats as crashed"


@dataclass
class DeploymentSpec:
    entrypoint: str
    name: str
    pool: str
    cron: str | None = None
    parameters: dict = field(default_factory=dict)
    description: str = ""
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ()


def deployment_specs(
    nightly_prompt: str | None = None,
    nightly_out: str | None = None,
    index_out: str | None = None,
    datasets_dir: str | None = None,
) -> list[DeploymentSpec]:
    """What `deploy_all` registers; nightly parameters come from the arguments."""
    return [
        # From the UI, a run ends with its demo served and linked on the run's page.
        DeploymentSpec(
            "flows/pipeline.py:pipeline",
            "pipeline",
            "cpu",
            parameters={"publish_demo": True},
            description="Prompt in; data, model, scores and demo out.",
            tags=("p2m", "pipeline"),
        ),
        # The nightly loop (issue 12): new data, retrain, and promote only a model the gate finds better.
        DeploymentSpec(
            "flows/nightly.py:nightly_flow",
            "nightly",
            "cpu",
            "0 2 * * *",
            (
                {"prompt_file": nightly_prompt, "out_dir": nightly_out, "fresh_seed": True}
                | ({"datasets_dir": datasets_dir} if datasets_dir else {})
            )
            if nightly_prompt and nightly_out
            else {},
            "Every night: regenerate data for a saved prompt, retrain, "
            "and promote the new model only if it beats the served one.",
            tags=("p2m", "nightly", "train"),
        ),
        DeploymentSpec(
            "flows/index_refresh.py:index_refresh_flow",
            "nightly-index-refresh",
            "cpu",
            "0 3 * * *",
            {"out_dir": index_out, "datasets_dir": datasets_dir} if index_out else {},
            "Rebuild the retrieval indexes every night.",
            tags=("p2m", "retrieval", "nightly"),
        ),
        # One fine-tune per GPU at a time: more runs wait in the queue instead of sharing the card.
        DeploymentSpec(
            "flows/train_evaluate.py:train_evaluate_flow",
            "gpu",
            "gpu",
            description="Train and evaluate a run folder on the GPU pool.",
            concurrency_limit=1,
            tags=("p2m", "train", "gpu"),
        ),
        DeploymentSpec(
            "flows/publish_demo.py:publish_demo_flow",
            "demo",
            "cpu",
            description="Serve or replace the demo page for a run folder.",
            tags=("p2m", "demo"),
        ),
        DeploymentSpec(
            "flows/serve_student.py:serve_student_flow",
            "serve",
            "cpu",
            description="Serve or replace the student's OpenAI-compatible endpoint for a run folder.",
            tags=("p2m", "serve"),
        ),
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


def deploy_all(specs: list[DeploymentSpec], source: Path = ROOT, settings=None) -> dict[str, str]:
    """Register every deployment (paused when its schedule lacks parameters); returns name -> id.

    The Run forms show the value `settings` (default: the settings here, P2M_* variables and
    .env) give for each field that sets a setting, with its bounds (`p2m.flows.form`).
    """
    from p2m.flows.form import show_settings
    from p2m.tasks.config import load_settings
    from prefect import Flow
    from prefect.deployments.runner import deploy

    settings = settings or load_settings()
    ids = {}
    for spec in specs:
        flow = Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        incomplete = spec.cron is not None and not spec.parameters
        deployment = flow.to_deployment(
            name=spec.name,
            work_pool_name=spec.pool,
            cron=spec.cron,
            parameters=spec.parameters or None,
            tags=list(spec.tags),
            description=spec.description
            + (" Paused: deploy again with its parameters to schedule it." if incomplete else ""),
            paused=incomplete or None,
            concurrency_limit=spec.concurrency_limit,
        )
        # The schema Prefect made from the signature, before it is sent (a private attribute in
        # Prefect 3.8, pinned below 3.9; test_deploy checks what the server ends up holding).
        show_settings(deployment._parameter_openapi_schema.properties, flow.fn, settings)
        [deployment_id] = deploy(
            deployment,
            work_pool_name=spec.pool,
            build=False,
            push=False,
            print_next_steps_message=False,
            ignore_warnings=True,
        )
        ids[f"{flow.name}/{spec.name}"] = str(deployment_id)
    return ids


def ensure_crash_detection(within_seconds: float | None = None) -> str:
    """Create (or replace) the automation that marks silent flow runs `Crashed`; returns its id.

    `within_seconds` defaults to three heartbeats (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, as the
    workers will see it: set the same value for them).
    """
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if within_seconds is None:
        within_seconds = 3 * (PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() or 180)
    with get_client(sync_client=True) as client:  # replaced, not duplicated, when `p2m deploy` runs again
        for old in client.read_automations_by_name(CRASH_AUTOMATION):
            client.delete_automation(old.id)
    automation = Automation(
        name=CRASH_AUTOMATION,
        description=(
            "A flow run that stopped sending heartbeats (its worker died) is marked Crashed, so it can be retried."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message=f"No heartbeat for {within_seconds:.0f} s: the worker running it died."
            )
        ],
    ).create()
    return str(automation.id)
