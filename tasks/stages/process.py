"""Stage, process: retrieved + generated examples -> `splits/` (train / validation / test).

Examples are deduplicated on their normalised input before splitting, so no test input is ever
seen in training; retrieved and generated examples are shuffled together (the paper's recipe).
The user's demonstrations go to training only: they are few, and scoring on them would flatter.
The user's own inputs (labelled by the teacher) fill the test and validation splits first.
"""

from __future__ import annotations

import random
from pathlib import Path

from p2m.tasks.core.config import ProcessConfig
from p2m.tasks.core.dedup import normalise
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import dataset_rows, save_splits, write_json
from p2m.tasks.core.spec import YOUR_INPUTS, PromptSpec

MIN_EXAMPLES = 10


def make_splits(
    spec: PromptSpec, retrieved_dir: Path, generated_dir: Path | None, cfg: ProcessConfig, out_dir: Path
) -> dict:
    """Write `out_dir/splits` (a DatasetDict with input, output, source) and return split sizes.

    Raises BadInputError when there are too few examples to train and test on.
    """
    pool: dict[str, dict] = {}
    sources = [("retrieved", retrieved_dir), ("generated", generated_dir)]
    for source, folder in sources:
        if folder is None or not Path(folder).exists():
            continue
        for row in dataset_rows(Path(folder)):
            pool.setdefault(
                normalise(row["input"]),
                {"input": row["input"], "output": row["output"], "source": row.get("source") or source},
            )
    demo_keys = {normalise(d.input) for d in spec.demonstrations}
    rows = [r for k, r in pool.items() if k not in demo_keys]
    if len(rows) < MIN_EXAMPLES:
        raise BadInputError(
            f"only {len(rows)} usable examples (retrieved + generated); at least {MIN_EXAMPLES} are needed: "
            "raise --num-examples, add a matching dataset to --datasets-dir, or use a stronger teacher"
        )
    rng = random.Random(cfg.seed)
    rng.shuffle(rows)
    # The held-out splits come from the user's own inputs first (labelled by the teacher): scores on
    # them say how the student does on real traffic, which generated inputs only approximate.
    rows.sort(key=lambda r: r["source"] != YOUR_INPUTS)
    n_test = min(cfg.max_test_examples, max(1, round(len(rows) * cfg.test_fraction)))
    n_val = max(1, round(len(rows) * cfg.val_fraction)) if cfg.val_fraction else 0
    test, val, train = rows[:n_test], rows[n_test : n_test + n_val], rows[n_test + n_val :]
    if cfg.max_train_examples:
        train = train[: cfg.max_train_examples]
    train += [{"input": d.input, "output": d.output, "source": "demonstration"} for d in spec.demonstrations]
    # The trainer needs a validation set: with val_fraction 0 one training row stands in.
    sizes = save_splits({"train": train, "validation": val or train[:1], "test": test}, out_dir / "splits")
    counts = {s: sum(r["source"] == s for r in train) for s in ("retrieved", YOUR_INPUTS, "generated", "demonstration")}
    record = {"sizes": sizes, "train_sources": counts, "deduplicated_pool": len(rows), "seed": cfg.seed}
    write_json(out_dir / "splits.json", record)
    return record
