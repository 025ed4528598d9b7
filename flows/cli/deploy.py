"""Deployment commands: work pools and deployments on a Prefect server, and the local teacher on its own."""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
import os
from pathlib import Path

from p2m.flows.cli.common import port_number, settings_for


def cmd_deploy(args) -> int:
    from p2m.deployments.deploy import (
        PoolOptions,
        deploy_all,
        deployment_specs,
        ensure_crash_detection,
        ensure_teacher_limits,
        ensure_work_pools,
    )
    from p2m.tasks.core.errors import P2MError

    if not os.environ.get("PREFECT_API_URL"):
        raise P2MError("p2m deploy needs a Prefect server: start one (`prefect server start`) and set PREFECT_API_URL")
    settings = settings_for({})
    check_deploy_inputs(args, settings)  # before anything is registered
    pools = PoolOptions(args.pool_type, args.image, args.gpu_image or args.image, args.gpus)
    created = ensure_work_pools(options=pools)
    specs = deployment_specs(
        str(args.nightly_prompt.resolve()) if args.nightly_prompt else None,
        str(args.nightly_out.resolve()) if args.nightly_out else None,
        str(args.index_out.resolve()) if args.index_out else None,
        str(args.datasets_dir.resolve()) if args.datasets_dir else None,
    )
    ids = deploy_all(specs, settings=settings, pool_type=args.pool_type)
    ensure_crash_detection()
    limits = ensure_teacher_limits(settings)
    print(f"work pools ({args.pool_type}): cpu, gpu{' (created: ' + ', '.join(created) + ')' if created else ''}")
    for spec, name in zip(specs, ids, strict=True):
        paused = spec.cron is not None and not spec.parameters
        note = "  (paused: needs --nightly-prompt/--nightly-out or --index-out)" if paused else ""
        print(f"{name:<45} pool {spec.pool:<4} {spec.cron or 'on demand'}{note}")
    print(
        "crash detection: runs whose worker dies are marked Crashed after three missed heartbeats "
        "(retry them from the UI)"
    )
    for name, done in limits.items():
        print(f"shared rate limit {name}: {done}")
    if not limits:
        print("shared rate limits: none (the local teacher, or P2M_LIMITS__SHARED=off)")
    if args.pool_type == "kubernetes":
        print(
            f"start workers in the cluster: prefect worker start --pool cpu --type kubernetes (and --pool gpu); "
            f"jobs run {pools.image} (gpu pool: {pools.gpu_image}, {pools.gpus} GPU(s) each)"
        )
    else:
        print("start workers: prefect worker start --pool cpu   (and --pool gpu on the GPU machine)")
    return 0


def check_deploy_inputs(args, settings) -> None:
    """Raise P2MError for a `p2m deploy` input the deployments could not use, before any API call.

    The nightly job needs its prompt file (readable, a valid prompt) and a run folder that is this
    prompt's or free; the index refresh a writable folder and a datasets folder that is one.
    """
    from p2m.flows.run.inputs import read_run_prompt
    from p2m.tasks.core.errors import BadInputError
    from p2m.tasks.core.run_store import check_run_dir
    from p2m.tasks.core.spec import prompt_identity
    from p2m.tasks.retrieval.index import check_index_inputs

    if args.gpus < 1:
        raise BadInputError(f"--gpus {args.gpus}: a gpu-pool job needs at least 1 GPU")
    if bool(args.nightly_prompt) != bool(args.nightly_out):
        raise BadInputError("the nightly job needs both --nightly-prompt and --nightly-out (or neither: it is paused)")
    if args.nightly_prompt:
        prompt = read_run_prompt(args.nightly_prompt, None, settings.parse.max_prompt_chars)
        check_run_dir(args.nightly_out.resolve(), prompt_identity(prompt))
    if args.index_out or args.datasets_dir:
        check_index_inputs(args.index_out or Path("."), args.datasets_dir, None)


def cmd_teacher(args) -> int:
    """`p2m teacher`: the local teacher on its own, with the same settings a run would give it.

    It serves from a child process whose output (llama.cpp's own log lines) goes to the log file,
    as in a run; this process prints where it answers and waits until Ctrl+C (or the child ends).
    """
    settings = settings_for({})
    from p2m.tasks.core.errors import P2MError
    from p2m.tasks.core.processes import check_port_free
    from p2m.tasks.teacher.local import KEY_VARIABLE, running_local_teacher

    check_port_free("127.0.0.1", args.port)  # llama.cpp's server waits forever on a port it cannot bind
    teacher = running_local_teacher(
        settings.home,
        args.model or settings.teacher_model,  # P2MError if unknown
        port=args.port,
        slots=settings.local_teacher_slots,
        threads=settings.local_teacher_threads or os.cpu_count() or 1,
        gpu_layers=settings.local_teacher_gpu_layers,
        api_key=os.environ.get(KEY_VARIABLE, ""),  # a key only when one is set, as before
    )
    with teacher as served:
        print(
            f"local teacher {served.model} on {served.base_url} (llama.cpp's log: {served.log_path}); Ctrl+C stops it",
            flush=True,
        )
        try:
            code = served.process.wait()
        except KeyboardInterrupt:
            return 0
    raise P2MError(f"the local teacher stopped by itself (exit code {code}); see {served.log_path}")


def register(sub, common) -> None:
    """Add this group's commands to the `p2m` subparsers `sub`; `common(parser)` adds the shared flags."""
    deploy = sub.add_parser("deploy", help="create the work pools and register the deployments on the Prefect server")
    deploy.add_argument("--nightly-prompt", type=Path, help="prompt file the nightly regeneration uses")
    deploy.add_argument("--nightly-out", type=Path, help="folder the nightly regeneration writes")
    deploy.add_argument("--index-out", type=Path, help="folder the nightly index refresh writes")
    deploy.add_argument("--datasets-dir", type=Path, help="datasets the nightly index refresh reads")
    deploy.add_argument(
        "--pool-type",
        choices=["process", "kubernetes"],
        default="process",
        help="process: workers run flows on their machine; kubernetes: each run a Job in the cluster",
    )
    deploy.add_argument("--image", default="p2m:latest", help="kubernetes: the p2m image jobs run (docker/Dockerfile)")
    deploy.add_argument("--gpu-image", help="kubernetes: the image of gpu-pool jobs (default: --image)")
    deploy.add_argument("--gpus", type=int, default=1, help="kubernetes: GPUs each gpu-pool job requests")
    deploy.set_defaults(func=cmd_deploy)

    teacher = sub.add_parser("teacher", help="serve the local teacher (OpenAI-compatible) on its own")
    teacher.add_argument("--port", type=port_number, default=8001)
    teacher.add_argument("--model", help="an embedded teacher's name or a .gguf file (default: P2M_TEACHER_MODEL)")
    teacher.set_defaults(func=cmd_teacher)
