"""Pipeline commands: the whole pipeline (`run`), generation alone, and training or evaluation alone."""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
from pathlib import Path

from p2m.flows.cli.common import flag_overrides, print_summary, settings_for


def cmd_run(args) -> int:
    from p2m.flows.run.inputs import check_run_inputs

    overrides = flag_overrides(args)
    check_run_inputs(
        settings_for(overrides), args.prompt_file, args.out
    )  # before Prefect starts: bad input fails in a second
    from p2m.flows.pipeline import pipeline

    summary = pipeline(prompt_file=str(args.prompt_file), out_dir=str(args.out), overrides=overrides)
    print_summary(summary)
    return 0


def cmd_generate(args) -> int:
    from p2m.flows.run.inputs import check_run_inputs

    overrides = flag_overrides(args)
    check_run_inputs(settings_for(overrides), args.spec, args.out)
    from p2m.flows.generate import generate_flow

    result = generate_flow(prompt_file=str(args.spec), out_dir=str(args.out), overrides=overrides)
    print(f"{result['accepted']} examples in {args.out}/generated; stopped because: {result['stop_reason']}")
    usage = result["usage"]
    print(
        f"requests {usage['requests']} (sent {usage['sent']}, from cache {usage['cached']}, "
        f"429s {usage['rate_limited']}), "
        f"tokens {usage['prompt_tokens']}+{usage['completion_tokens']}, cost ${usage['cost_usd']:.4f}"
    )
    return 0


def cmd_train_evaluate(args, stages: list[str]) -> int:
    overrides = flag_overrides(args)
    from p2m.flows.run.inputs import check_settings_paths

    check_settings_paths(settings_for(overrides))
    from p2m.flows.train_evaluate import check_run_folder, train_evaluate_flow

    check_run_folder(args.run_dir, stages)
    print_summary(train_evaluate_flow(run_dir=str(args.run_dir), overrides=overrides, stages=stages))
    return 0


def register(sub, common) -> None:
    """Add this group's commands to the `p2m` subparsers `sub`; `common(parser)` adds the shared flags."""
    run = sub.add_parser("run", help="the whole pipeline")
    run.add_argument("prompt_file", type=Path)
    run.add_argument("--out", type=Path, default=None, help="run folder (default runs/<prompt file name>)")
    common(run)
    run.add_argument("--dataset", help="force this dataset ('none': generated data only)")
    run.add_argument("--model", help="force this student model")
    run.add_argument("--eval-data", type=Path, help="JSONL with input/output: a real test set")
    run.add_argument("--epochs", type=float)
    run.add_argument("--max-train-examples", type=int)
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate", help="generate training examples only")
    gen.add_argument("spec", type=Path, help="a prompt file, as for `p2m run`")
    gen.add_argument("--out", type=Path, required=True)
    common(gen)
    gen.set_defaults(func=cmd_generate)

    for name, stages in (("train", ["train"]), ("evaluate", ["evaluate"])):
        sp = sub.add_parser(name, help=f"run the {name} stage alone on a run folder made by `p2m run`")
        sp.add_argument("run_dir", type=Path)
        common(sp, generation=False)
        if name == "train":
            sp.add_argument("--epochs", type=float)
        else:
            sp.add_argument("--eval-data", type=Path, help="JSONL with input/output: a real test set")
        sp.set_defaults(func=lambda a, st=stages: cmd_train_evaluate(a, st))
