"""Nightly commands: one round of the nightly loop, and rolling back a promotion."""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
from pathlib import Path

from p2m.flows.cli.common import flag_overrides, settings_for


def cmd_nightly(args) -> int:
    overrides = flag_overrides(args)
    from p2m.flows.run.inputs import check_run_inputs

    check_run_inputs(settings_for(overrides), args.prompt_file, args.out)
    from p2m.flows.nightly import nightly_flow

    result = nightly_flow(
        prompt_file=str(args.prompt_file),
        out_dir=str(args.out),
        eval_data=str(args.eval_data) if args.eval_data else None,
        seed=args.seed,
        overrides=overrides,
    )
    print(result["message"])
    return 0


def cmd_rollback(args) -> int:
    settings = settings_for({})
    from p2m.tasks.nightly.promotion import rollback

    record = rollback(args.run_dir, settings)
    print(record["message"])
    return 0


def register(sub, common) -> None:
    """Add this group's commands to the `p2m` subparsers `sub`; `common(parser)` adds the shared flags."""
    nightly = sub.add_parser("nightly", help="one round of the nightly loop: new data, retrain, promote only if better")
    nightly.add_argument("prompt_file", type=Path)
    nightly.add_argument("--out", type=Path, required=True, help="the serving run folder (made on the first round)")
    nightly.add_argument(
        "--eval-data", type=Path, help="the fixed test set (default: the held-out split frozen at the first round)"
    )
    common(nightly)
    nightly.set_defaults(func=cmd_nightly)
    rollback = sub.add_parser("rollback", help="put the previously promoted model back in a nightly run folder")
    rollback.add_argument("run_dir", type=Path)
    rollback.set_defaults(func=cmd_rollback)
