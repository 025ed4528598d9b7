"""Shipping commands: export, serve, the long-running student server, and the demo (served or published)."""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
import os
import sys
from pathlib import Path

from p2m.flows.cli.common import port_number, settings_for


def cmd_export(args) -> int:
    settings = settings_for({})
    from p2m.tasks.ship.export import export_name, export_student

    export_name(args.format, args.quantize)  # a bad pair fails before any work
    record = export_student(args.run_dir, args.format, args.quantize, settings.serve, settings.serve.max_tokens)
    from p2m.tasks.report.render import FORMATS_TITLE, as_text, format_rows
    from p2m.tasks.ship.export_report import formats_report

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
    settings = settings_for({"serve": serve} if serve else {})
    from p2m.tasks.ship.serve import model_name, serve_student

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
    settings_for({})
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


def cmd_demo(args) -> int:
    settings = settings_for({})
    from p2m.tasks.ship.demo import check_demo_inputs, serve_demo

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
    settings_for({})
    from p2m.flows.publish_demo import publish_demo_flow

    record = publish_demo_flow(run_dir=str(args.run_dir), port=args.port, host=args.host)
    print(
        f"demo for {record['run_dir']} at {record['url']} (process {record['pid']}"
        f"{', replaced the previous one' if record['replaced_previous'] else ''}); it answered "
        f"{record['sample_input']!r} with {record['sample_output']!r}"
    )
    return 0


def open_flag(parser, protection: str) -> None:
    """--insecure-no-auth: serve beyond this machine with no `protection` (refused without it)."""
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help=f"serve on a host other than 127.0.0.1 without a {protection} (refused otherwise); prints a warning",
    )


def register(sub, common) -> None:
    """Add this group's commands to the `p2m` subparsers `sub`; `common(parser)` adds the shared flags."""
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
    serve.add_argument("--port", type=port_number, help="port (default P2M_SERVE__PORT, 8080)")
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
    publish_student.add_argument("--port", type=port_number)
    open_flag(publish_student, "key")
    publish_student.set_defaults(func=cmd_publish_student)
    demo = sub.add_parser("demo", help="serve the Gradio demo for a run folder")
    demo.add_argument("run_dir", type=Path)
    demo.add_argument("--host")
    demo.add_argument("--port", type=port_number)
    demo.add_argument(
        "--auth", help="user:password for a login page; prefer P2M_DEMO_AUTH (a command line is visible to `ps`)"
    )
    open_flag(demo, "password")
    demo.set_defaults(func=cmd_demo)

    publish = sub.add_parser("publish", help="serve the demo as a long-running process, replacing the one on its port")
    publish.add_argument("run_dir", type=Path)
    publish.add_argument("--host")
    publish.add_argument("--port", type=port_number)
    open_flag(publish, "password")
    publish.set_defaults(func=cmd_publish)
