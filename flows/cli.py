"""`p2m`: the command line. Errors a user can fix print one line and exit with code 2."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from pathlib import Path

# Before anything imports prefect, transformers or datasets: no hub look-ups (a missing name then
# fails at once instead of after 25-50 s), no telemetry. Export HF_HUB_OFFLINE=0 to allow the hub.
for _var, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_var, _value)


def _overrides(args: argparse.Namespace) -> dict:
    """Settings from the flags that were given (nested by section, as `Settings` takes them)."""
    sections = {
        "generation": {
            "num_examples": args.num_examples,
            "votes": getattr(args, "votes", None),
            "seed": getattr(args, "seed", None),
            "max_api_calls": getattr(args, "max_api_calls", None),
        },
        "limits": {
            "requests_per_minute": getattr(args, "requests_per_minute", None),
            "tokens_per_minute": getattr(args, "tokens_per_minute", None),
            "max_concurrency": getattr(args, "max_concurrency", None),
        },
        "retrieval": {"dataset": getattr(args, "dataset", None)},
        "student": {"model": getattr(args, "model", None)},
        "process": {"max_train_examples": getattr(args, "max_train_examples", None)},
        "train": {"epochs": getattr(args, "epochs", None)},
        "evaluation": {"eval_data": getattr(args, "eval_data", None)},
    }
    out: dict = {k: {f: v for f, v in fields.items() if v is not None} for k, fields in sections.items()}
    out = {k: v for k, v in out.items() if v}
    for flag in ("datasets_dir", "models_dir", "datasets_index", "models_index", "teacher_model"):
        if getattr(args, flag, None) is not None:
            out[flag] = getattr(args, flag)
    return out


def _settings(overrides: dict):
    """Validated settings; points Prefect's result storage at p2m's (before Prefect reads it)."""
    from p2m.tasks.config import load_settings

    settings = load_settings(overrides)
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(settings.results_path))
    return settings


def cmd_run(args) -> int:
    from p2m.tasks.inputs import check_run_inputs

    overrides = _overrides(args)
    check_run_inputs(
        _settings(overrides), args.prompt_file, args.out
    )  # before Prefect starts: bad input fails in a second
    from p2m.flows.pipeline import pipeline

    summary = pipeline(prompt_file=str(args.prompt_file), out_dir=str(args.out), overrides=overrides)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    from p2m.tasks.report import summary_text

    print(summary_text(summary))


def cmd_train_evaluate(args, stages: list[str]) -> int:
    overrides = _overrides(args)
    from p2m.tasks.inputs import check_settings_paths

    check_settings_paths(_settings(overrides))
    from p2m.flows.train_evaluate import check_run_folder, train_evaluate_flow

    check_run_folder(args.run_dir, stages)
    print_summary(train_evaluate_flow(run_dir=str(args.run_dir), overrides=overrides, stages=stages))
    return 0


def cmd_demo(args) -> int:
    settings = _settings({})
    from p2m.tasks.demo import check_demo_inputs, serve_demo

    run_dir, host, port = Path(args.run_dir), args.host or settings.demo_host, args.port or settings.demo_port
    # The password comes from P2M_DEMO_AUTH when `p2m publish` starts this: never on a command line, which `ps` shows.
    auth = check_demo_inputs(
        run_dir, host, port, args.auth or settings.demo_auth, args.insecure_no_auth or settings.demo_insecure_no_auth
    )
    print(f"serving the demo for {run_dir} on http://{host}:{port}", file=sys.stderr)
    serve_demo(run_dir, host=host, port=port, auth=auth)
    return 0


def insecure_no_auth(args, variable: str) -> None:
    """--insecure-no-auth as the setting `variable`, which the flows and the service they start read."""
    if args.insecure_no_auth:
        os.environ[variable] = "true"


def cmd_publish(args) -> int:
    insecure_no_auth(args, "P2M_DEMO_INSECURE_NO_AUTH")
    _settings({})
    from p2m.flows.publish_demo import publish_demo_flow

    record = publish_demo_flow(run_dir=str(args.run_dir), port=args.port, host=args.host)
    print(
        f"demo for {record['run_dir']} at {record['url']} (process {record['pid']}"
        f"{', replaced the previous one' if record['replaced_previous'] else ''}); it answered "
        f"{record['sample_input']!r} with {record['sample_output']!r}"
    )
    return 0


def cmd_teacher(args) -> int:
    """`p2m teacher`: the local teacher on its own, with the same settings a run would give it."""
    settings = _settings({})
    from p2m.tasks.local_teacher import main as serve_teacher
    from p2m.tasks.teacher_models import teacher_gguf

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


def cmd_generate(args) -> int:
    from p2m.tasks.inputs import check_run_inputs

    overrides = _overrides(args)
    check_run_inputs(_settings(overrides), args.spec, args.out)
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


def cmd_retrieve(args, kind: str) -> int:
    settings = _settings(_overrides(args))
    from p2m.tasks.parse import parse_prompt, read_prompt_file

    prompt = read_prompt_file(Path(args.spec), settings.parse.max_prompt_chars)
    teacher = None
    if prompt.spec is None or kind == "model":
        from p2m.tasks.teacher import Teacher

        teacher = Teacher(settings)
    try:
        spec = parse_prompt(prompt, teacher.client() if teacher and prompt.spec is None else None)
        if kind == "datasets":
            from p2m.tasks.retrieve_datasets import dataset_candidates, top_candidates

            records, embeddings, encoder = dataset_candidates(settings.datasets_dir, settings.datasets_index)
            ranked, _ = top_candidates(spec, records, settings.retrieval.top_k, embeddings, encoder)
        else:
            from p2m.tasks.retrieve_model import hypothetical_card, model_candidates, rank_models

            pool = [
                r
                for r in model_candidates(settings.models_dir, settings.models_index)
                if not r.test_only and r.size_bytes <= settings.student.model_size_cap_gb * 1e9
            ]
            ranked = rank_models(f"{spec.instruction} {hypothetical_card(spec, teacher.client())}", pool)
    finally:
        if teacher:
            teacher.close()
    if args.json:
        print(json.dumps(ranked, indent=2))
    else:
        for c in ranked:
            print(f"{c['score']:>10}  {c['name']}")
    return 0


def cmd_index(args) -> int:
    _settings({})
    from p2m.tasks.index import check_index_inputs

    check_index_inputs(args.out, args.datasets_dir, args.models_dir)  # before the flow's server starts
    from p2m.flows.index_refresh import index_refresh_flow

    result = index_refresh_flow(
        out_dir=str(args.out),
        datasets_dir=str(args.datasets_dir) if args.datasets_dir else None,
        models_dir=str(args.models_dir) if args.models_dir else None,
        hub_limit=args.hub_limit,
        encoder=args.encoder,
    )
    d, m = result["datasets"], result["models"]
    print(
        f"{d['path']}: {d['count']} datasets ({d['embedded']} embedded, {d['reused']} reused, encoder {d['encoder']})"
    )
    print(f"{m['path']}: {m['count']} models")
    return 0


def cmd_deploy(args) -> int:
    from p2m.deployments.deploy import (
        PoolOptions,
        deploy_all,
        deployment_specs,
        ensure_crash_detection,
        ensure_teacher_limits,
        ensure_work_pools,
    )
    from p2m.tasks.errors import P2MError

    if args.gpus < 1:
        raise P2MError(f"--gpus {args.gpus}: a gpu-pool job needs at least 1 GPU")
    if not os.environ.get("PREFECT_API_URL"):
        raise P2MError("p2m deploy needs a Prefect server: start one (`prefect server start`) and set PREFECT_API_URL")
    settings = _settings({})
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


def cmd_export(args) -> int:
    settings = _settings({})
    from p2m.tasks.export import export_name, export_student

    export_name(args.format, args.quantize)  # a bad pair fails before any work
    record = export_student(args.run_dir, args.format, args.quantize, settings.serve, settings.serve.max_tokens)
    from p2m.tasks.export_report import formats_report
    from p2m.tasks.report import FORMATS_TITLE, as_text, format_rows

    print(as_text([(FORMATS_TITLE, format_rows(formats_report(args.run_dir)))]))
    print(
        f"{record['path']}: {record['size_mb']} MB, exact match {record['exact_match']:.1%} "
        f"on {record['n']} held-out examples "
        f"(original {record['reference_exact_match']:.1%}, same answer on {record['agreement']:.0%}), "
        f"{record['ms_p50']} ms per example p50, {record['ms_p95']} p95 at batch 1 "
        f"(original {record['reference_ms_p50']} / {record['reference_ms_p95']})"
    )
    return 0


def cmd_serve(args) -> int:
    insecure_no_auth(args, "P2M_SERVE__INSECURE_NO_AUTH")
    serve = {k: v for k, v in {"host": args.host, "port": args.port, "api_key": args.api_key}.items() if v is not None}
    settings = _settings({"serve": serve} if serve else {})
    from p2m.tasks.serve import model_name, serve_student

    cfg = settings.serve

    def ready(record):
        print(
            f"serving {args.run_dir} ({record['format']} {record['quantize']}, "
            f"exact match {record['exact_match']:.1%} held out) "
            f"as model {model_name(args.run_dir)!r} on http://{cfg.host}:{cfg.port}/v1"
            f"{' (API key required)' if cfg.api_key else ''}; Ctrl+C stops it",
            file=sys.stderr,
            flush=True,
        )

    serve_student(args.run_dir, cfg, args.format, args.quantize, on_ready=ready)
    return 0


def cmd_publish_student(args) -> int:
    insecure_no_auth(args, "P2M_SERVE__INSECURE_NO_AUTH")
    _settings({})
    from p2m.flows.serve_student import serve_student_flow

    record = serve_student_flow(run_dir=str(args.run_dir), port=args.port, host=args.host)
    print(
        f"student of {record['run_dir']} served at {record['base_url']} as model {record['model']!r} "
        f"(process {record['pid']}"
        f"{', replaced the previous one' if record['replaced_previous'] else ''}); "
        f"it answered {record['sample_input']!r} "
        f"with {record['sample_output']!r}"
    )
    return 0


def cmd_nightly(args) -> int:
    overrides = _overrides(args)
    from p2m.tasks.inputs import check_run_inputs

    check_run_inputs(_settings(overrides), args.prompt_file, args.out)
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
    settings = _settings({})
    from p2m.tasks.promotion import rollback

    record = rollback(args.run_dir, settings.home)
    print(record["message"])
    return 0


def open_flag(parser, protection: str) -> None:
    """--insecure-no-auth: serve beyond this machine with no `protection` (refused without it)."""
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help=f"serve on a host other than 127.0.0.1 without a {protection} (refused otherwise); prints a warning",
    )


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="p2m", description="Turn a task prompt into a small model you can deploy yourself.")
    p.add_argument("--verbose", action="store_true", help="show Prefect's log lines and the traceback of any error")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, generation=True):
        sp.add_argument("--datasets-dir", type=Path, help="folder of dataset folders (HF dataset repo layout)")
        sp.add_argument("--models-dir", type=Path, help="folder of model folders (HF model repo layout)")
        sp.add_argument(
            "--datasets-index", type=Path, help="a dataset index file (`p2m index`), searched instead of --datasets-dir"
        )
        sp.add_argument("--models-index", type=Path, help="a model index file (`p2m index`)")
        sp.add_argument("--teacher-model", help="teacher model name at the endpoint")
        if generation:
            sp.add_argument("--num-examples", type=int, help="examples to generate (0: retrieved data only)")
            sp.add_argument("--votes", type=int, help="outputs sampled per input for the majority vote")
            sp.add_argument("--seed", type=int, help="generation seed (change it for new data)")
            sp.add_argument("--requests-per-minute", type=float)
            sp.add_argument("--tokens-per-minute", type=float)
            sp.add_argument("--max-concurrency", type=int)
            sp.add_argument("--max-api-calls", type=int)
        else:
            sp.set_defaults(num_examples=None)

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

    for kind in ("datasets", "model"):
        r = sub.add_parser(f"retrieve-{kind}", help=f"rank candidate {kind} for a prompt")
        r.add_argument("spec", type=Path)
        r.add_argument("--json", action="store_true", help="a JSON list, best first")
        common(r, generation=False)
        r.set_defaults(func=lambda a, k=kind: cmd_retrieve(a, k))

    for name, stages in (("train", ["train"]), ("evaluate", ["evaluate"])):
        sp = sub.add_parser(name, help=f"run the {name} stage alone on a run folder made by `p2m run`")
        sp.add_argument("run_dir", type=Path)
        common(sp, generation=False)
        if name == "train":
            sp.add_argument("--epochs", type=float)
        else:
            sp.add_argument("--eval-data", type=Path, help="JSONL with input/output: a real test set")
        sp.set_defaults(func=lambda a, st=stages: cmd_train_evaluate(a, st))

    index = sub.add_parser("index", help="build or refresh the retrieval index files")
    index.add_argument("--out", type=Path, required=True, help="folder for datasets.jsonl and models.jsonl")
    index.add_argument("--datasets-dir", type=Path)
    index.add_argument("--models-dir", type=Path)
    index.add_argument(
        "--hub-limit", type=int, default=0, help="also index the N most downloaded Hub datasets and models (network)"
    )
    index.add_argument(
        "--encoder",
        choices=["minilm-static", "minilm"],
        default="minilm-static",
        help="dataset embeddings: minilm-static (100k in ~20 s) or minilm (best recall, ~1 h per 100k on 2 cores)",
    )
    index.set_defaults(func=cmd_index)

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

    # Shipping the student (issue 12): export, serve, the serving process, the nightly loop, rollback.
    export = sub.add_parser(
        "export", help="export the student to GGUF (llama.cpp) or ONNX, checked on the held-out split"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", choices=["gguf", "onnx"], required=True)
    export.add_argument(
        "--quantize", choices=["q8_0", "int8"], help="q8_0 (GGUF) or int8 (ONNX, dynamic); default f16 / fp32"
    )
    export.set_defaults(func=cmd_export)
    serve = sub.add_parser(
        "serve", help="serve the student behind an OpenAI-compatible /v1/chat/completions (foreground)"
    )
    serve.add_argument("run_dir", type=Path)
    serve.add_argument("--host", help="address to bind (default P2M_SERVE__HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default P2M_SERVE__PORT, 8080)")
    serve.add_argument(
        "--api-key", help="key clients must send; prefer P2M_SERVE__API_KEY (a command line is visible to `ps`)"
    )
    serve.add_argument(
        "--format", choices=["gguf", "onnx"], help="default: gguf for decoder-only students, onnx otherwise"
    )
    serve.add_argument("--quantize", choices=["q8_0", "int8"], help="default: q8_0 for gguf, none for onnx")
    open_flag(serve, "key")
    serve.set_defaults(func=cmd_serve)
    publish_student = sub.add_parser(
        "publish-student", help="`p2m serve` as a long-running process, replacing the one on its port"
    )
    publish_student.add_argument("run_dir", type=Path)
    publish_student.add_argument("--host")
    publish_student.add_argument("--port", type=int)
    open_flag(publish_student, "key")
    publish_student.set_defaults(func=cmd_publish_student)
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

    demo = sub.add_parser("demo", help="serve the Gradio demo for a run folder")
    demo.add_argument("run_dir", type=Path)
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument(
        "--auth", help="user:password for a login page; prefer P2M_DEMO_AUTH (a command line is visible to `ps`)"
    )
    open_flag(demo, "password")
    demo.set_defaults(func=cmd_demo)

    publish = sub.add_parser("publish", help="serve the demo as a long-running process, replacing the one on its port")
    publish.add_argument("run_dir", type=Path)
    publish.add_argument("--host")
    publish.add_argument("--port", type=int)
    open_flag(publish, "password")
    publish.set_defaults(func=cmd_publish)

    teacher = sub.add_parser("teacher", help="serve the local teacher (OpenAI-compatible) on its own")
    teacher.add_argument("--port", type=int, default=8001)
    teacher.add_argument("--model", help="an embedded teacher's name or a .gguf file (default: P2M_TEACHER_MODEL)")
    teacher.set_defaults(func=cmd_teacher)
    for command in sub.choices.values():  # `p2m run ... --verbose` as well as `p2m --verbose run ...`
        command.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help="show Prefect's log lines and tracebacks"
        )
    return p


class UsageError(Exception):
    """A bad command line (unknown flag, missing argument, a value of the wrong type)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line saying what is wrong, not the usage block, and
    flags are never guessed from a prefix (`--epoch` is not silently `--epochs`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


# Errors from the operating system that a user causes and can fix (a folder they cannot write, a full disk).
USER_OS_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG)


def main(argv: list[str] | None = None) -> int:
    """Run the `p2m` command; returns the exit code (0 done, 2 an error the user can fix, 1 a bug, 130 interrupted).

    Called as the `p2m` program (no `argv`), it also starts the reaper that stops what it started
    should it be killed outright (tests that call `main([...])` in-process do without).
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"p2m: error: {e}", file=sys.stderr)
        return 2
    verbose = args.verbose or os.environ.get("P2M_VERBOSE", "").lower() in ("1", "true", "yes")
    if not verbose:
        # Prefect's console lines (and its tracebacks for errors p2m explains in one line) stay off
        # the terminal; the Prefect UI still receives every log line. The libraries' own progress
        # bars and advice ("Map", "Saving the dataset", "Loading weights") would drown p2m's one
        # line or bar per stage: they are off too (read when those libraries are imported, below).
        for var, value in {
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "TQDM_DISABLE": "1",  # other libraries' bars (model2vec's "Encoding tokens"); p2m's pass disable=False
        }.items():
            os.environ.setdefault(var, value)
    if getattr(args, "out", "unset") is None:
        args.out = Path("runs") / args.prompt_file.stem
    if argv is None:
        from p2m.tasks.reaper import start_reaper

        start_reaper()
    from p2m.tasks.errors import P2MError

    try:
        return args.func(args)
    except P2MError as e:
        if verbose:
            traceback.print_exc()
        print(f"p2m: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from p2m.tasks.run_store import disk_full_error

        # A full disk, also when a library wrapped the OS error (torch, safetensors, pyarrow).
        full = disk_full_error(e, Path(getattr(e, "filename", None) or getattr(args, "out", None) or "."))
        if full is None and not (isinstance(e, OSError) and e.errno in USER_OS_ERRORS):
            raise
        if verbose:
            traceback.print_exc()
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        what = full or f"{e.strerror}{where}; fix that and run the same command again (finished stages are kept)"
        print(f"p2m: error: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "p2m: interrupted; run the same command again to resume (finished stages and answered requests are cached)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
