"""The nightly loop's bookkeeping: a fixed test set, a growing data pool, promoted models and rollback.

A nightly run folder (`p2m nightly PROMPT --out DIR`, or the nightly deployment) is a normal run
folder whose `model/` is always the model being served, plus:

    nightly/test_set.jsonl   the fixed test set: the user's eval_data, or the held-out split frozen at the first round
    nightly/pool.jsonl       every training example so far (train + validation), deduplicated on the normalised input
    nightly/decisions.jsonl  every round: the gate's numbers and what was done
    nightly/rounds/STAMP/    a round's candidate: its generated data, splits and (until decided) model
    promoted/N/model         every model ever promoted, with promoted/N/scores.json (answers on the test set)
    promotions.jsonl         one line per promotion or rollback; the last line names the model being served

Functions here take and return plain data; `p2m.flows.nightly` wires them with the stage tasks.
"""

from __future__ import annotations

import datetime
import random
import shutil
from pathlib import Path

from p2m.tasks.core.config import Settings
from p2m.tasks.core.dedup import normalise
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import (
    append_jsonl,
    content_hash,
    read_json,
    read_jsonl,
    save_splits,
    split_rows,
    write_json,
    write_jsonl,
)
from p2m.tasks.ship.demo_service import demo_slot, publish_demo
from p2m.tasks.ship.serve_service import publish_student, running_server
from p2m.tasks.storage.datafiles import read_pairs

NIGHTLY = "nightly"


def test_set_path(run_dir: Path) -> Path:
    return Path(run_dir) / NIGHTLY / "test_set.jsonl"


def freeze_test_set(run_dir: Path, eval_data: Path | None) -> list[dict]:
    """Write nightly/test_set.jsonl once (eval_data if given, else the held-out split); returns its rows."""
    path = test_set_path(run_dir)
    if path.exists():
        return read_jsonl(path)
    if eval_data:
        rows = [{"input": r["input"], "output": r["output"]} for r in read_pairs(Path(eval_data))]
        source = str(eval_data)
    else:
        rows = [{"input": r["input"], "output": r["output"]} for r in split_rows(run_dir, "test")]
        source = "held-out split of the first round"
    if not rows:
        raise BadInputError(f"the nightly loop needs test examples; {source} has none: pass --eval-data")
    write_jsonl(path, rows)
    write_json(
        path.with_suffix(".json"),
        {"source": source, "n": len(rows), "frozen": datetime.datetime.now().isoformat(timespec="seconds")},
    )
    return rows


def pool_path(run_dir: Path) -> Path:
    return Path(run_dir) / NIGHTLY / "pool.jsonl"


def read_pool(run_dir: Path) -> list[dict]:
    """The examples the loop has so far; at the first round, the run's train and validation splits."""
    path = pool_path(run_dir)
    if path.exists():
        return read_jsonl(path)
    return [
        {"input": r["input"], "output": r["output"], "source": r.get("source", "retrieved")}
        for name in ("train", "validation")
        for r in split_rows(run_dir, name)
    ]


def write_pool(run_dir: Path, rows: list[dict]) -> None:
    """Replace nightly/pool.jsonl with `rows` (written whole, then renamed)."""
    write_jsonl(pool_path(run_dir), rows)


def merge_examples(pool: list[dict], new: list[dict], test_rows: list[dict]) -> tuple[list[dict], int]:
    """(pool + new examples, deduplicated on the normalised input, none of them a test input; how many were new).

    An input seen before keeps its first output: the data a model was promoted on does not change under it.
    """
    test = {normalise(str(r["input"])) for r in test_rows}
    merged: dict[str, dict] = {}
    for row in pool:
        key = normalise(str(row["input"]))
        if key not in test:
            merged.setdefault(key, row)
    before = len(merged)
    for row in new:
        key = normalise(str(row["input"]))
        if key not in test:
            merged.setdefault(
                key, {"input": row["input"], "output": row["output"], "source": row.get("source", "generated")}
            )
    return list(merged.values()), len(merged) - before


def write_round_splits(rows: list[dict], test_rows: list[dict], out_dir: Path, val_fraction: float, seed: int) -> dict:
    """`out_dir/splits` from the pool (train/validation, shuffled with `seed`) and the fixed test set."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_val = max(1, round(len(rows) * val_fraction))
    val, train = rows[:n_val], rows[n_val:]
    splits = {"train": train, "validation": val, "test": [r | {"source": "test"} for r in test_rows]}
    return save_splits(splits, out_dir / "splits")


def score_model(
    model_dir: Path, architecture: str, instruction: str, test_rows: list[dict], batch_size: int, max_new_tokens: int
) -> dict:
    """Per-example exact match (1/0) of a model on the test rows, with its answers and the model's hash."""
    # lazy: torch loads in seconds; `p2m rollback` and the bookkeeping do without it
    from p2m.tasks.student.inference import generate_outputs, load_model, normalise_answer

    model, tokenizer = load_model(model_dir, architecture)
    predictions = generate_outputs(
        model, tokenizer, architecture, instruction, [r["input"] for r in test_rows], batch_size, max_new_tokens
    )
    correct = [
        int(normalise_answer(p) == normalise_answer(r["output"])) for p, r in zip(predictions, test_rows, strict=True)
    ]
    return {
        "model_hash": content_hash(model_dir),
        "correct": correct,
        "predictions": predictions,
        "exact_match": round(sum(correct) / max(1, len(correct)), 4),
        "n": len(correct),
    }


def promotions(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "promotions.jsonl")


def serving_number(run_dir: Path) -> int | None:
    """Which promoted model is being served (the last promotion or rollback), if any."""
    events = promotions(run_dir)
    return events[-1]["number"] if events else None


def promote(
    run_dir: Path,
    model_dir: Path,
    scores: dict,
    decision: dict | None,
    reason: str,
    extra_files: dict[str, Path] | None = None,
) -> dict:
    """Keep `model_dir` as promoted model N (moved to promoted/N/model), serve a copy as run_dir/model;
    returns the record.

    `extra_files` (name -> path) are copied beside the served model (its train.json and loss log).
    """
    run_dir = Path(run_dir)
    numbers = [e["number"] for e in promotions(run_dir) if e["event"] == "promote"]
    number = max(numbers, default=0) + 1
    archive = run_dir / "promoted" / str(number)
    archive.mkdir(parents=True, exist_ok=True)
    if Path(model_dir).resolve() == (run_dir / "model").resolve():
        shutil.copytree(model_dir, archive / "model")
    else:
        shutil.move(str(model_dir), str(archive / "model"))
        put_in_service(run_dir, archive / "model")
    for name, path in (extra_files or {}).items():
        if Path(path).exists():
            shutil.copy2(path, run_dir / name)
            shutil.copy2(path, archive / name)
    write_json(archive / "scores.json", scores)
    record = {
        "event": "promote",
        "number": number,
        "at": datetime.datetime.now().isoformat(timespec="seconds"),
        "model_hash": scores["model_hash"],
        "exact_match": scores["exact_match"],
        "n": scores["n"],
        "reason": reason,
        "gate": decision,
        "path": str(archive / "model"),
    }
    append_jsonl(run_dir / "promotions.jsonl", record)
    return record


def put_in_service(run_dir: Path, model_dir: Path) -> None:
    """Make run_dir/model a copy of `model_dir`, swapped in whole (a reader never sees half of each)."""
    run_dir = Path(run_dir)
    staging = run_dir / ".model.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    old = run_dir / ".model.outgoing"
    shutil.rmtree(old, ignore_errors=True)
    if (run_dir / "model").exists():
        (run_dir / "model").rename(old)
    staging.rename(run_dir / "model")
    shutil.rmtree(old, ignore_errors=True)


def serving_scores(run_dir: Path, test_rows: list[dict]) -> dict | None:
    """The served model's stored answers on the test set, if they belong to the model in run_dir/model."""
    number = serving_number(run_dir)
    path = Path(run_dir) / "promoted" / str(number) / "scores.json"
    if number is None or not path.exists():
        return None
    scores = read_json(path)
    current = content_hash(Path(run_dir) / "model")
    return scores if scores["model_hash"] == current and scores["n"] == len(test_rows) else None


def saved_scores(run_dir: Path, number: int, current: int) -> dict:
    """The scores of promoted model `number`, once its saved copy is known to be whole enough to serve.

    Raises BadInputError, having changed nothing, when promoted/NUMBER has lost its model (no
    weights) or its scores.json (missing or unreadable): model `current` stays served.
    """
    folder = Path(run_dir) / "promoted" / str(number)
    model = folder / "model"
    whole = any(model.glob("*.safetensors")) or any(model.glob("*.bin"))  # the weights, whatever their layout
    try:
        scores = read_json(folder / "scores.json") if whole else None
    except (OSError, ValueError):
        scores = None
    if not isinstance(scores, dict) or not {"exact_match", "n"} <= scores.keys():
        raise BadInputError(
            f"cannot roll back to model {number}: its saved copy in {folder} is missing or incomplete "
            f"(model/ with its weights, scores.json); model {current} is still served, unchanged"
        )
    return scores


def rollback(run_dir: Path, settings: Settings | None = None) -> dict:
    """Serve the model promoted before the current one again; returns the record (with a message).

    Raises BadInputError when there is nothing to go back to. Restarts a running student server
    and demo for this folder (see `republish`) when `settings` are given.
    """
    run_dir = Path(run_dir).resolve()
    events = promotions(run_dir)
    if not events:
        raise BadInputError(
            f"{run_dir} has no promotions.jsonl: only a folder made by `p2m nightly` can be rolled back"
        )
    # Promotions stack up and a rollback takes the top one off: after 1, 2, rollback, 3, a rollback
    # serves 1 again (2 was already rolled back), never a model that was itself rolled back.
    stack: list[int] = []
    for event in events:
        if event["event"] == "promote":
            stack.append(event["number"])
        elif stack:
            stack.pop()
    current = events[-1]["number"]
    if len(stack) < 2:
        raise BadInputError(
            f"model {current} is the first promoted model still in service in {run_dir}: "
            "there is no earlier one to roll back to"
        )
    previous = stack[-2]
    scores = saved_scores(run_dir, previous, current)  # before anything served is touched
    put_in_service(run_dir, run_dir / "promoted" / str(previous) / "model")
    for name in ("train.json", "train_log.jsonl"):
        if (run_dir / "promoted" / str(previous) / name).exists():
            shutil.copy2(run_dir / "promoted" / str(previous) / name, run_dir / name)
    record = {
        "event": "rollback",
        "number": previous,
        "from": current,
        "at": datetime.datetime.now().isoformat(timespec="seconds"),
        "exact_match": scores["exact_match"],
        "n": scores["n"],
        "path": str(run_dir / "promoted" / str(previous) / "model"),
    }
    append_jsonl(run_dir / "promotions.jsonl", record)
    restarted = republish(run_dir, settings) if settings else []
    return record | {
        "restarted": restarted,
        "message": f"{run_dir}: serving model {previous} again (exact match {scores['exact_match']:.1%} "
        f"on the fixed test set) instead of model {current}"
        + (f"; restarted {', '.join(restarted)}" if restarted else ""),
    }


def republish(run_dir: Path, settings: Settings) -> list[str]:
    """Restart the student server and the demo that p2m runs for this folder, if any; returns what was restarted.

    Each runs on the port `settings` give (the caller's: a flow's overrides included, else
    P2M_SERVE__PORT, P2M_DEMO_PORT); one serving another folder is left alone.
    """
    home = settings.home
    run_dir = str(Path(run_dir).resolve())
    restarted = []
    server = running_server(home, settings.serve.port)
    if server and server.get("run_dir") == run_dir:
        record = publish_student(Path(run_dir), home, settings.serve)
        restarted.append(f"the student server at {record['base_url']}")
    demo = demo_slot(home, settings.demo_port).running()
    if demo and demo.get("run_dir") == run_dir:
        record = publish_demo(Path(run_dir), home, settings.demo_host, settings.demo_port, settings.demo_auth)
        restarted.append(f"the demo at {record['url']}")
    return restarted
