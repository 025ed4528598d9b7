"""Stage, train: fine-tune the chosen student on `splits/` -> `model/` + `train_log.jsonl`.

Both architectures: decoder-only models learn `prompt + output` with the loss on the output tokens
only; encoder-decoder models map prompt -> output. Every example is textualised with the
instruction (`format_prompt`), exactly as evaluation and the demo will present it. The paper's
defaults (AdamW, lr 5e-5, 3 epochs) are the config's defaults. Validation loss every epoch, the best
epoch kept, early stopping; checkpoints under `checkpoints/<fingerprint>` so an interrupted run
resumes where it stopped (and a changed config never resumes from a stale checkpoint). Several GPUs
(or P2M_TRAIN__PROCESSES): one process per device, DDP, the same code (`p2m.tasks.student.launch`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from p2m.tasks.core.config import TrainConfig
from p2m.tasks.core.run_store import atomic_folder, full_disk_explained, write_json, write_jsonl
from p2m.tasks.storage.embedded import resolve_model_path
from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import train_classifier
from p2m.tasks.student.format import format_prompt
from p2m.tasks.student.inference import exact_match, generate_outputs, load_model
from p2m.tasks.student.launch import (  # last_complete_checkpoint: shared with the classifier student
    distributed_world,
    last_complete_checkpoint,
    train_distributed,
    training_processes,
)
from transformers import TrainerCallback


def encode_example(tokenizer, architecture: str, prompt: str, output: str, max_length: int) -> dict:
    """Token ids and labels for one example; prompt tokens are masked (-100) for decoder-only."""
    if architecture == "encoder-decoder":
        ids = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
        labels = tokenizer(output, truncation=True, max_length=max_length)["input_ids"]
        return {"input_ids": ids, "labels": labels}
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(" " + output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    target_ids = target_ids[: max_length // 2] if len(target_ids) > max_length // 2 else target_ids
    prompt_ids = prompt_ids[-(max_length - len(target_ids)) :]  # keep the end: it holds the input
    return {"input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids}


class ValidationMetrics(TrainerCallback):
    """After each evaluation, generates on (up to 64) validation examples and adds
    `eval_exact_match` to the metrics, which then picks the best epoch and drives early stopping
    (two epochs without improvement end training), with the validation loss as the tie-break."""

    def __init__(self, tokenizer, architecture: str, instruction: str, rows: list[dict], max_new_tokens: int):
        self.tokenizer, self.architecture, self.instruction = tokenizer, architecture, instruction
        self.rows, self.max_new_tokens = rows[:64], max_new_tokens

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if metrics is None or model is None or not self.rows:
            return
        predictions = generate_outputs(
            model,
            self.tokenizer,
            self.architecture,
            self.instruction,
            [r["input"] for r in self.rows],
            max_new_tokens=self.max_new_tokens,
        )
        metrics["eval_exact_match"] = round(exact_match(predictions, [r["output"] for r in self.rows]), 4)
        # Ties on exact match go to the lower validation loss. A small validation set of generated
        # examples is often all right after two epochs while the loss still falls; stopping there
        # (as a perfect score once did) left the quick start's student at 89% on real dates.
        metrics["eval_selection"] = metrics["eval_exact_match"] - 1e-6 * min(metrics.get("eval_loss", 0.0), 10.0)
        state.log_history.append(
            {"eval_exact_match": metrics["eval_exact_match"], "epoch": state.epoch, "step": state.global_step}
        )


class TrainProgress(TrainerCallback):
    """The train stage's one progress bar: steps, with the last loss and validation exact match
    (in place of the Trainer's own bar and its printed log dicts)."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm import tqdm

        if not state.is_world_process_zero:  # one bar for the stage, however many processes train
            return
        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=False,  # TQDM_DISABLE (set by the CLI) is for other libraries' bars, not this one
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = {k: logs[k] for k in ("loss", "eval_exact_match", "eval_accuracy") if k in (logs or {})}
        if self.bar is not None and shown:
            self.bar.set_postfix({k: round(v, 4) for k, v in shown.items()}, refresh=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.bar is not None and metrics and "eval_exact_match" in metrics:
            self.bar.set_postfix(
                epoch=round(state.epoch or 0, 1), eval_exact_match=metrics["eval_exact_match"], refresh=True
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class PadCollator:
    """Pads a batch on the right: input ids with the pad id, labels with -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        lwidth = max(len(f["labels"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), lwidth), -100, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def choose_max_length(lengths: list[int], cap: int | None) -> int:
    """Long enough for 99% of examples (a few outliers are truncated), at most 512 or `cap`."""
    if not lengths:
        return 64
    longest = sorted(lengths)[int((len(lengths) - 1) * 0.99)]
    return min(cap or 512, max(16, longest))


MIN_STEPS_PER_EPOCH = 25


def choose_batch_size(max_length: int, num_parameters: int, cuda: bool, num_examples: int | None = None) -> int:
    """Examples per step from the sequence length and memory: a token budget per step that fits
    the device (on a GPU, what is left of its memory after weights, gradients and AdamW state);
    and, for a small training set, small enough for MIN_STEPS_PER_EPOCH optimizer steps an epoch
    (200 examples in 4 big batches would leave the model nearly untrained at lr 5e-5)."""
    if cuda:
        free, _ = torch.cuda.mem_get_info()
        budget = max(1024, int((free - 16 * num_parameters) / (num_parameters / 1e6 * 40)))  # rough bytes per token
    else:
        budget = 2048  # tokens per step on CPU: beyond this, steps only get slower
    size = max(1, min(64, budget // max_length))
    return min(size, max(1, num_examples // MIN_STEPS_PER_EPOCH)) if num_examples else size


def mixed_precision(cuda: bool, bf16_supported: bool) -> dict:
    """TrainingArguments' precision flags: bf16 on GPUs that have it (Ampere on), fp16 with loss
    scaling on older ones (T4, V100), fp32 on the CPU (CPU autocast is slower than fp32 here)."""
    return {"bf16": cuda and bf16_supported, "fp16": cuda and not bf16_supported}


def train_student(
    splits_dir: Path, choice: dict, instruction: str, cfg: TrainConfig, out_dir: Path, home: Path
) -> dict:
    """Fine-tune; write `out_dir/model` and `out_dir/train_log.jsonl`; return a training record.

    On several devices (`p2m.tasks.student.launch`): called in the stage's process, it starts one
    process per device running this same function, and returns the record they wrote.
    """
    import datasets
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    # Made (an embedded model built or converted) before any launch: N processes would race to it.
    model_path = resolve_model_path(choice["path"], home)
    world = distributed_world()
    if world == 1 and (processes := training_processes(cfg)) > 1:
        return train_distributed(splits_dir, choice, instruction, cfg, out_dir, home, processes)
    if choice["architecture"] == CLASSIFIER:  # an encoder with a label head: its own trainer, the same records
        return train_classifier(model_path, splits_dir, choice, cfg, out_dir, callbacks=(TrainProgress(),))

    set_seed(cfg.seed)
    arch = choice["architecture"]
    model, tokenizer = load_model(model_path, arch)
    splits = datasets.load_from_disk(str(splits_dir))
    raw_lengths = [
        len(tokenizer(format_prompt(instruction, r["input"]) + " " + r["output"])["input_ids"]) + 1
        for r in splits["train"]
    ]
    max_length = choose_max_length(raw_lengths, cfg.max_length)

    def encode(row):
        return encode_example(tokenizer, arch, format_prompt(instruction, row["input"]), row["output"], max_length)

    # keep_in_memory: no cache files written into the run folder's splits/
    train_ds = splits["train"].map(encode, remove_columns=splits["train"].column_names, keep_in_memory=True)
    val_ds = splits["validation"].map(encode, remove_columns=splits["validation"].column_names, keep_in_memory=True)

    cuda = torch.cuda.is_available()
    batch_size = cfg.batch_size or choose_batch_size(max_length, model.num_parameters(), cuda, len(train_ds))
    # The batch is the whole step's: the loader makes the batches one process would, and each of
    # the `world` processes takes its slice of every one (split_batches), so more devices make a
    # step faster without changing what it learns. Slices must be equal: a multiple of `world`.
    batch_size = max(world, batch_size // world * world)
    total_steps = math.ceil(math.ceil(len(train_ds) / batch_size) * cfg.epochs)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        task = "SEQ_2_SEQ_LM" if arch == "encoder-decoder" else "CAUSAL_LM"
        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type=task)
        )

    fingerprint = hashlib.sha256(
        json.dumps([choice["path"], cfg.model_dump(), len(train_ds), max_length], sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    ckpt_dir = out_dir / "checkpoints" / fingerprint
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        accelerator_config={"split_batches": world > 1},
        ddp_find_unused_parameters=False,  # every weight (or LoRA adapter) takes part in every step
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_selection",
        greater_is_better=True,
        logging_steps=max(1, min(50, total_steps // 20)),  # about 20 points on the loss curve, however long the run
        report_to=[],
        seed=cfg.seed,
        use_cpu=not cuda,
        **mixed_precision(cuda, cuda and torch.cuda.is_bf16_supported()),
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # batches of similar length pad (and compute) less
        dataloader_num_workers=0,
        disable_tqdm=True,  # TrainProgress is the stage's bar
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        # Validation metrics first: early stopping reads the exact match it adds.
        callbacks=[
            ValidationMetrics(tokenizer, arch, instruction, list(splits["validation"]), max_new_tokens=32),
            EarlyStoppingCallback(early_stopping_patience=2),
            TrainProgress(),
        ],
    )
    trainer.remove_callback(PrinterCallback)  # it would print every log dict on the terminal
    resume = last_complete_checkpoint(ckpt_dir)
    started = time.monotonic()
    with full_disk_explained(out_dir):  # torch and safetensors wrap a full disk in errors of their own
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.monotonic() - started

    record = {
        "base_model": choice["name"],
        "architecture": arch,
        "max_length": max_length,
        "train_examples": len(train_ds),
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "batch_size": batch_size,
        "processes": world,
        "lora": cfg.lora,
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "seconds": round(seconds, 1),
        "best_eval_exact_match": trainer.state.best_metric,
        "resumed": bool(resume),
        "device": "cuda" if cuda else "cpu",
        "tokens_seen": int(sum(len(x) for x in train_ds["input_ids"]) * cfg.epochs),
    }
    if trainer.is_world_process_zero():  # one writer; every process holds the same weights
        final = trainer.model.merge_and_unload() if cfg.lora else trainer.model
        with full_disk_explained(out_dir), atomic_folder(out_dir / "model") as model_dir:
            final.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        write_jsonl(out_dir / "train_log.jsonl", trainer.state.log_history)
        write_json(out_dir / "train.json", record)
    return record


def main(request_path: str) -> None:
    """One process started by `train_distributed`: train as the request says (rank 0 writes the results)."""
    r = json.loads(Path(request_path).read_text(encoding="utf-8"))
    train_student(
        Path(r["splits_dir"]),
        r["choice"],
        r["instruction"],
        TrainConfig(**r["cfg"]),
        Path(r["out_dir"]),
        Path(r["home"]),
    )


if __name__ == "__main__":
    main(sys.argv[1])
