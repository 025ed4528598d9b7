"""Deployment commands: work pools and deployments on a Prefect server, and the local teacher on its own."""

from __future__ import annotations

import os
from pathlib import Path

# lazy: see common.py
from p2m.flows.cli.common import settings_for


def cmd_deploy(args) -> int:
    # lazy: see common.py
    from p2m.deployments.deploy import (
        PoolOptions,
        deploy_all,
        deployment_specs,
        ensure_crash_detection,
        ensure_teacher_limits,
        ensure_work_pools,
    )

    # lazy: see common.py
    from p2m.tasks.core.errors import P2MError

    if args.gpus < 1:
        raise P2MError(f"--gpus {args.gpus}: a gpu-pool job needs at least 1 GPU")
    if not os.environ.get("PREFECT_API_URL"):
        raise P2MError("p2m deploy needs a Prefect server: start one (`prefect server start`) and set PREFECT_API_URL")
    settings = settings_for({})
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


def cmd_teacher(args) -> int:
    """`p2m teacher`: the local teacher on its own, with the same settings a run would give it."""
    settings = settings_for({})
    # lazy: see common.py
    from p2m.tasks.teacher.local import main as serve_teacher

    # lazy: see common.py
    from p2m.tasks.teacher.models import teacher_gguf

    name, path = teacher_gguf(args.model or settings.teacher_model, settings.home)  # P2MError if unknown
    threads = settings.local_teacher_threads or os.cpu_count() or 1
    serve_teacher(
        [
            "--name",
            name,
            "--model-path",
            str(path),
            "--port",
            str(args.port),
            "--slots",
            str(settings.local_teacher_slots),
        ]
        + ["--threads", str(threads), "--gpu-layers", str(settings.local_teacher_gpu_layers)]
    )
    return 0


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
    teacher.add_argument("--port", type=int, default=8001)
    teacher.add_argument("--model", help="an embedded teacher's name or a .gguf file (default: P2M_TEACHER_MODEL)")
    teacher.set_defaults(func=cmd_teacher)
