"""Benchmark: p2m's training and evaluation throughput against plain transformers, side by side.

Training: p2m's train stage (`p2m.tasks.stages.train.train_student`: length-grouped batches, validation by
generation every epoch, checkpoints for resume) against a bare `transformers.Trainer` loop on the
same model, data and settings (AdamW, lr 5e-5, batch 8, one epoch, no evaluation, no
checkpoints), in tokens per second of training data. Evaluation: p2m's `generate_outputs`
(length-sorted batches of EvalConfig.batch_size, 64) against batch-10 greedy generation in
input order, as the reference implementation's executor batches, in examples per second, on the
fine-tuned model.

    python bench/train_eval.py [--train-examples 400] [--eval-examples 100]    # about 10 minutes
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2m.tasks.core.config import EvalConfig, Settings, TrainConfig  # noqa: E402
from p2m.tasks.core.run_store import rows_to_dataset  # noqa: E402
from p2m.tasks.stages.train import PadCollator, encode_example, train_student  # noqa: E402
from p2m.tasks.storage.embedded import smollm2_path  # noqa: E402
from p2m.tasks.student.format import format_prompt  # noqa: E402
from p2m.tasks.student.inference import (  # noqa: E402
    exact_match,
    generate_outputs,
    load_model,  # noqa: E402
)

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTION = "Convert the number written in English words to digits."


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def example_rows(n: int, offset: int = 0) -> list[dict]:
    rows = [
        json.loads(line)
        for line in (ROOT / "examples" / "datasets" / "number_words" / "train.jsonl").read_text().splitlines()
    ]
    return [{"input": r["words"], "output": r["digits"], "source": "retrieved"} for r in rows[offset : offset + n]]


def bare_trainer_tokens_per_s(model_path: Path, rows: list[dict], cfg: TrainConfig) -> tuple[float, float]:
    """(tokens/s, seconds) of a plain Trainer loop: same encoding, no evaluation, no checkpoints."""
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(cfg.seed)
    model, tokenizer = load_model(model_path, "decoder-only")
    encoded = [
        encode_example(tokenizer, "decoder-only", format_prompt(INSTRUCTION, r["input"]), r["output"], 128)
        for r in rows
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=cfg.seed,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=encoded, data_collator=PadCollator(tokenizer.pad_token_id)
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = sum(len(e["input_ids"]) for e in encoded) * cfg.epochs
    return tokens / seconds, seconds


def p2m_tokens_per_s(rows: list[dict], val_rows: list[dict], cfg: TrainConfig, home: Path) -> tuple[float, float, Path]:
    import datasets

    tmp = Path(tempfile.mkdtemp(prefix="p2m-bench-"))
    datasets.DatasetDict(
        {
            "train": rows_to_dataset(rows, ("input", "output", "source")),
            "validation": rows_to_dataset(val_rows, ("input", "output", "source")),
            "test": rows_to_dataset(val_rows[:1], ("input", "output", "source")),
        }
    ).save_to_disk(str(tmp / "splits"))
    choice = {"name": "smollm2-135m-instruct", "path": "embedded:smollm2-135m-instruct", "architecture": "decoder-only"}
    record = train_student(tmp / "splits", choice, INSTRUCTION, cfg, tmp, home)
    return record["tokens_seen"] / record["seconds"], record["seconds"], tmp / "model"


def eval_rows_per_s(model_dir: Path, rows: list[dict]) -> list[dict]:
    model, tokenizer = load_model(model_dir, "decoder-only")
    inputs, refs = [r["input"] for r in rows], [r["output"] for r in rows]
    results = []
    started = time.perf_counter()
    batch = EvalConfig().batch_size
    ours = generate_outputs(model, tokenizer, "decoder-only", INSTRUCTION, inputs, batch_size=batch, max_new_tokens=64)
    results.append((f"p2m generate_outputs (length-sorted, batch {batch})", time.perf_counter() - started, ours))
    started = time.perf_counter()
    reference = []
    for start in range(0, len(inputs), 10):  # batch 10 in input order, greedy, as the reference executor batches
        batch = tokenizer(
            [format_prompt(INSTRUCTION, x) for x in inputs[start : start + 10]], return_tensors="pt", padding=True
        )
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=64, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        reference += [
            tokenizer.decode(s, skip_special_tokens=True).strip().split("\n", 1)[0]
            for s in out[:, batch["input_ids"].shape[1] :]
        ]
    results.append(("batch-10 in order (reference executor)", time.perf_counter() - started, reference))
    return [
        {
            "stage": "evaluate",
            "system": name,
            "examples_per_s": round(len(rows) / secs, 2),
            "seconds": round(secs, 1),
            "exact_match": round(exact_match(preds, refs), 3),
            "peak_rss_mb": peak_mb(),
        }
        for name, secs, preds in results
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--eval-examples", type=int, default=100)
    args = parser.parse_args()
    home = Settings().home
    model_path = smollm2_path(home)
    rows, val_rows = example_rows(args.train_examples), example_rows(48, offset=args.train_examples)
    cfg = TrainConfig(epochs=1, batch_size=8)
    bare_tps, bare_s = bare_trainer_tokens_per_s(model_path, rows, cfg)
    ours_tps, ours_s, trained = p2m_tokens_per_s(rows, val_rows, cfg, home)
    table = [
        {
            "stage": "train",
            "system": "bare transformers Trainer",
            "tokens_per_s": round(bare_tps),
            "seconds": round(bare_s, 1),
            "ratio": 1.0,
        },
        {
            "stage": "train",
            "system": "p2m train stage",
            "tokens_per_s": round(ours_tps),
            "seconds": round(ours_s, 1),
            "ratio": round(ours_tps / bare_tps, 2),
        },
    ]
    for r in table:
        r["peak_rss_mb"] = peak_mb()
    evals = eval_rows_per_s(trained, example_rows(args.eval_examples, offset=args.train_examples + 48))
    evals[0]["ratio"], evals[1]["ratio"] = round(evals[0]["examples_per_s"] / evals[1]["examples_per_s"], 2), 1.0
    for rows_ in (table, evals):
        cols = list(rows_[0])
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows_:
            print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
        print()


if __name__ == "__main__":
    main()
