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

Both pools are `process` pools by default: a worker started on a machine runs the flows there
(`prefect worker start --pool gpu` on the GPU machine), and the deployments run the code from this
folder (`from_source`), so workers need the same checkout (or the Docker images in docker/).
`--pool-type kubernetes` makes them kubernetes pools instead (`p2m.deployments.kubernetes`): each
run a Job from p2m's image, GPUs requested for the gpu pool, flows imported from the installed
package.

`p2m deploy` also creates the shared rate limits of the teacher its settings name (a remote one:
`p2m.tasks.teacher.shared_limits`), so they are on the server before the first run.
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

from p2m.deployments.kubernetes import kubernetes_job_template
from p2m.flows.run.form import show_settings
from p2m.tasks.core.config import load_settings
from p2m.tasks.core.errors import P2MError
from p2m.tasks.teacher.handle import Teacher
from p2m.tasks.teacher.shared_limits import ensure_limits

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
        # The nightly loop: new data, retrain, and promote only a model the gate finds better.
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


@dataclass
class PoolOptions:
    """What kind of work pools `p2m deploy` makes: `type` "process" or "kubernetes"; for
    kubernetes, the images the cpu and gpu pools' jobs run and the GPUs a gpu job requests."""

    type: str = "process"
    image: str = "p2m:latest"
    gpu_image: str = "p2m-gpu:latest"
    gpus: int = 1

    def template(self, pool: str) -> dict | None:
        """The base job template for `pool` (None: Prefect's default for a process pool)."""
        if self.type != "kubernetes":
            return None

        if pool == "gpu":
            return kubernetes_job_template(self.gpu_image, self.gpus)
        return kubernetes_job_template(self.image)


def ensure_work_pools(names: tuple[str, ...] = POOLS, options: PoolOptions | None = None) -> list[str]:
    """Create the work pools that do not exist yet, of `options.type` (process by default); a
    kubernetes pool that exists gets the template again (new images, GPU count). Returns the ones
    created. Raises P2MError for a pool that exists with another type (Prefect cannot change it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    options = options or PoolOptions()
    created = []
    with get_client(sync_client=True) as client:
        for name in names:
            template = options.template(name)
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                extra = {"base_job_template": template} if template is not None else {}
                client.create_work_pool(WorkPoolCreate(name=name, type=options.type, **extra))
                created.append(name)
                continue
            if pool.type != options.type:
                raise P2MError(
                    f"work pool {name!r} exists as a {pool.type} pool; delete it "
                    f"(`prefect work-pool delete {name}`) to make it a {options.type} pool"
                )
            if template is not None:
                client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
    return created


def ensure_teacher_limits(settings) -> dict[str, str]:
    """The shared rate limits of the teacher `settings` name, created or set to its limits (name ->
    "created", "updated" or "ok"); none for the local teacher or with P2M_LIMITS__SHARED=off."""

    if settings.teacher_kind() == "local" or settings.limits.shared == "off":
        return {}
    teacher = Teacher(settings)
    return ensure_limits(teacher.identity, teacher.limits())


def module_flow(entrypoint: str):
    """The flow object an entrypoint of this folder names, imported from the installed package
    ("flows/pipeline.py:pipeline" -> p2m.flows.pipeline's `pipeline`)."""
    import importlib

    path, name = entrypoint.split(":")
    return getattr(importlib.import_module("p2m." + path.removesuffix(".py").replace("/", ".")), name)


def deploy_all(
    specs: list[DeploymentSpec], source: Path = ROOT, settings=None, pool_type: str = "process"
) -> dict[str, str]:
    """Register every deployment (paused when its schedule lacks parameters); returns name -> id.

    The Run forms show the value `settings` (default: the settings here, P2M_* variables and
    .env) give for each field that sets a setting, with its bounds (`p2m.flows.run.form`). On
    kubernetes pools the flows are imported from the `p2m` package installed in the job's image
    (a module entrypoint: nothing to pull); on process pools they run from `source`.
    """
    from prefect import Flow
    from prefect.deployments.runner import EntrypointType, deploy

    settings = settings or load_settings()
    ids = {}
    for spec in specs:
        if pool_type == "kubernetes":
            flow, how = module_flow(spec.entrypoint), {"entrypoint_type": EntrypointType.MODULE_PATH}
        else:
            flow, how = Flow.from_source(source=str(source), entrypoint=spec.entrypoint), {}
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
            **how,
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
