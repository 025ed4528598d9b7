"""`p2m`: the command line. Errors a user can fix print one line and exit with code 2.

The commands live in groups beside their handlers: pipeline, retrieval, deploy, ship, nightly.
"""

from __future__ import annotations

# lazy imports: handlers import p2m's modules when they run, so `p2m --help` and a bad flag answer
# in well under a second instead of after Prefect, torch and transformers load (see common.py).
import argparse
import errno
import os
import signal
import sys
import traceback
from pathlib import Path

import p2m.flows.cli.deploy as deploy
import p2m.flows.cli.nightly as nightly
import p2m.flows.cli.pipeline as pipeline
import p2m.flows.cli.retrieval as retrieval
import p2m.flows.cli.ship as ship
from p2m.flows.cli.common import add_common
from p2m.tasks.core.run_store import disk_full_error

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


GROUPS = (pipeline, retrieval, deploy, ship, nightly)


def build_parser() -> argparse.ArgumentParser:
    """The `p2m` parser: each command group registers its own commands beside their handlers."""
    p = Parser(prog="p2m", description="Turn a task prompt into a small model you can deploy yourself.")
    p.add_argument("--verbose", action="store_true", help="show Prefect's log lines and the traceback of any error")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub, add_common)
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, systemd, Kubernetes), raised in the main thread as Ctrl-C is."""


def stop_on_sigterm() -> None:
    """Make SIGTERM end p2m as Ctrl-C does: at once, through the same cleanup, with the same line.

    Python's default for SIGTERM kills the process without a word (and, while a flow runs,
    Prefect's handler re-sends it to that default). A second SIGTERM while the first is being
    handled kills outright: whoever sends it insists.
    """

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


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
        from p2m.tasks.core.reaper import start_reaper

        start_reaper()
        stop_on_sigterm()
    from p2m.tasks.core.errors import P2MError

    try:
        return args.func(args)
    except P2MError as e:
        if verbose:
            traceback.print_exc()
        print(f"p2m: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
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
    except KeyboardInterrupt as e:
        print(
            "p2m: interrupted; run the same command again to resume (finished stages and answered requests are cached)",
            file=sys.stderr,
        )
        return 143 if isinstance(e, Terminated) else 130  # 128 + the signal, as shells report it


if __name__ == "__main__":
    sys.exit(main())
