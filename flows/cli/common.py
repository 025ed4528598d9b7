"""What the command groups share: settings from flags, the shared flags, the run summary."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# lazy imports: handlers import p2m's modules when they run: `p2m --help` and a bad flag answer in
# well under a second instead of after Prefect, torch and transformers load (several seconds).


def flag_overrides(args: argparse.Namespace) -> dict:
    """Settings from the flags that were given (nested by section, as `Settings` takes them)."""
    sections = {
        "generation": {
            "num_examples": args.num_examples,
            "votes": getattr(args, "votes", None),
            "seed": getattr(args, "seed", None),
            "max_api_calls": getattr(args, "max_api_calls", None),
            "inputs": getattr(args, "inputs", None),
            "rounds": getattr(args, "rounds", None),
        },
        "parse": {"kind": getattr(args, "kind", None), "labels": getattr(args, "labels", None)},
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


def settings_for(overrides: dict):
    """Validated settings; points Prefect's result storage at p2m's (before Prefect reads it)."""
    from p2m.tasks.core.config import load_settings

    settings = load_settings(overrides)
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(settings.results_path))
    return settings


def print_summary(summary: dict) -> None:
    from p2m.tasks.report.render import summary_text

    print(summary_text(summary))


def port_number(text: str) -> int:
    """argparse type of every --port: a TCP port from 1 to 65535, else one line saying so.

    Checked when the command line is read: a port llama.cpp or uvicorn cannot bind made some
    commands hang (`p2m teacher --port 99999` printed nothing and never returned).
    """
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 1 to 65535")
    return port


def count_of(what: str):
    """argparse type for a count of `what`: a whole number, 0 or more, else one line saying so."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = -1
        if number < 0:
            raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a number of {what}, 0 or more")
        return number

    return parse


def add_common(sp, generation=True):
    """The flags every pipeline-like command takes: inputs, the teacher and, with `generation`, generation."""
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
        sp.add_argument(
            "--rounds",
            type=int,
            help="classification: generate in up to N rounds, each aimed at what a quick student gets wrong",
        )
        sp.add_argument("--requests-per-minute", type=float)
        sp.add_argument("--tokens-per-minute", type=float)
        sp.add_argument("--max-concurrency", type=int)
        sp.add_argument("--max-api-calls", type=int)
        sp.add_argument(
            "--inputs",
            help="your own unlabelled inputs (JSONL/JSON/CSV/Parquet with an `input` column, or text, one per "
            "line; a path or URL): the teacher labels them and they lead the training data",
        )
        sp.add_argument(
            "--kind",
            choices=["auto", "classification", "extraction", "generation"],
            help="the task's kind (default: read from the prompt; the summary says how)",
        )
        sp.add_argument(
            "--labels", help="a classification task's labels, comma-separated (implies --kind classification)"
        )
    else:
        sp.set_defaults(num_examples=None)
