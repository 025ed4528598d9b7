"""The encoder-classifier student: a small encoder with a classification head that answers one label.

For a classification task (a closed set of labels) the student is an encoder such as
all-MiniLM-L6-v2 with `AutoModelForSequenceClassification`'s head (the [CLS] token's pooled
state, a linear layer per label). It sees the input text alone (the instruction is the same for
every example, so it would only use up tokens) and can only ever answer a label of the set.

- `load_classifier`: a base encoder with a new head sized to the labels, or a trained one.
- `classify`: labels with per-label probabilities, batched, the saved temperature applied.
- `train_classifier`: the transformers Trainer with LABEL_TASKS.md 1c's recommendations, then
  temperature scaling on the validation logits (Guo et al. 2017): one scalar T, saved in the
  model's config as `p2m_temperature`, with ECE before and after in train.json.
- `label_report`: per-label precision, recall, F1 and a confusion table, for evaluation.

The trained folder is a plain transformers folder: `config.json` holds `id2label` (the label
order), `p2m_temperature` and `p2m_max_length` (the token cap of training, used at inference).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from p2m.tasks.core.config import ClassifierTrainConfig, TrainConfig
from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.kinds import fold
from p2m.tasks.core.run_store import atomic_folder, full_disk_explained, split_rows, write_json, write_jsonl
from p2m.tasks.student.launch import distributed_world, last_complete_checkpoint

ARCHITECTURE = "encoder-classifier"
TEMPERATURE_KEY = "p2m_temperature"
MAX_LENGTH_KEY = "p2m_max_length"
OTHER = "(other)"  # a prediction outside the label set (a teacher's free answer), in confusion tables


# --- loading and predicting -------------------------------------------------------------------


def load_classifier(path: Path | str, labels: list[str] | None = None):
    """(model, tokenizer) from a folder. With `labels`: a base encoder given a new head, one output
    per label in that order; without: a trained classifier as saved (labels from its config).

    Raises P2MError for a folder transformers cannot load.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    head = {}
    if labels is not None:
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "ignore_mismatched_sizes": True,  # a base that already had a head for other labels gets a new one
        }
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32, **head)
    except (OSError, ValueError, KeyError, TypeError) as e:  # what transformers raises for a damaged or missing folder
        raise P2MError(
            f"cannot load the classifier in {path} ({e.__class__.__name__}: {str(e)[:160]}); "
            "train it again (`p2m train RUN_DIR`) or fix the folder"
        ) from None
    return model, tokenizer


def model_labels(model) -> list[str]:
    """The labels of a classifier, in the order of its outputs."""
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(model.config.num_labels)]


def input_max_length(model, tokenizer) -> int:
    """The token cap inputs are truncated to: training's, else what the encoder's positions allow."""
    saved = getattr(model.config, MAX_LENGTH_KEY, None)
    if saved:
        return int(saved)
    positions = getattr(model.config, "max_position_embeddings", 512)
    return int(min(positions, tokenizer.model_max_length or positions))


def encode_input(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids of one input as the classifier sees it (special tokens added, truncated)."""
    return list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])


def probabilities_from_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of `logits / temperature` over the last axis (float64, rows sum to 1)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)  # overflow-free
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def classifier_logits(model, tokenizer, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """Raw logits (N x labels) for `texts`, in their order; sorted by length into batches so they pad little."""
    was_training = model.training
    model.eval()
    max_length = input_max_length(model, tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(model.device)
        with torch.inference_mode():
            # input_ids and attention_mask only: what the ONNX graph takes, so both compute the same
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out[idx] = logits.float().cpu()
    if was_training:
        model.train()
    return out


def answers_from_probabilities(probs: np.ndarray, labels: list[str]) -> list[tuple[str, dict[str, float]]]:
    """(the most probable label, {label: probability}) for each row of `probs`."""
    return [(labels[int(row.argmax())], {lab: float(p) for lab, p in zip(labels, row, strict=True)}) for row in probs]


def classify(model, tokenizer, texts: list[str], batch_size: int = 32) -> list[tuple[str, dict[str, float]]]:
    """(label, {label: probability}) for each text, the saved temperature applied (probabilities sum to 1)."""
    logits = classifier_logits(model, tokenizer, texts, batch_size).numpy()
    probs = probabilities_from_logits(logits, float(getattr(model.config, TEMPERATURE_KEY, 1.0) or 1.0))
    return answers_from_probabilities(probs, model_labels(model))


def classifier_info(model_dir: Path) -> dict:
    """What running a trained classifier needs besides its weights: labels, temperature, token cap."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    id2label = config["id2label"]
    return {
        "labels": [str(id2label[str(i)]) for i in range(len(id2label))],
        "temperature": float(config.get(TEMPERATURE_KEY) or 1.0),
        "max_length": int(config.get(MAX_LENGTH_KEY) or min(config.get("max_position_embeddings", 512), 512)),
    }


# --- calibration ------------------------------------------------------------------------------


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `targets` under softmax(logits / temperature)."""
    return float(torch.nn.functional.cross_entropy(logits.float() / temperature, targets))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T) (Guo et al. 2017).

    LBFGS on log T (T stays positive), started at T = 1; the argmax, so accuracy, is unchanged.
    Returns 1.0 when the fit would not lower the NLL (too few examples, a degenerate set).
    """
    logits, targets = logits.detach().float(), targets.long()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():  # callers may run under inference_mode
        opt.step(closure)
    temperature = float(log_t.detach().exp().clamp(0.05, 20.0))
    if not math.isfinite(temperature) or nll(logits, targets, temperature) > nll(logits, targets, 1.0):
        return 1.0
    return temperature


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    """ECE: over equal-width bins of the top probability, |accuracy - confidence| weighted by the bin's share."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    if len(targets) == 0:
        return 0.0
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def calibrate(model, tokenizer, rows: list[dict]) -> dict:
    """Fit the temperature on `rows` ({"input", "label": index}), save it in the model's config;
    returns {temperature, ece_before, ece_after, nll_before, nll_after, accuracy, validation_examples}."""
    if not rows:
        setattr(model.config, TEMPERATURE_KEY, 1.0)
        return {"temperature": 1.0, "validation_examples": 0, "note": "no validation examples: not calibrated"}
    logits = classifier_logits(model, tokenizer, [r["input"] for r in rows])
    targets = torch.tensor([r["label"] for r in rows])
    temperature = fit_temperature(logits, targets)
    setattr(model.config, TEMPERATURE_KEY, temperature)
    before, after = probabilities_from_logits(logits.numpy()), probabilities_from_logits(logits.numpy(), temperature)
    return {
        "temperature": round(temperature, 4),
        "ece_before": round(expected_calibration_error(before, targets.numpy()), 4),
        "ece_after": round(expected_calibration_error(after, targets.numpy()), 4),
        "nll_before": round(nll(logits, targets), 4),
        "nll_after": round(nll(logits, targets, temperature), 4),
        "accuracy": round(float((logits.argmax(1) == targets).float().mean()), 4),
        "validation_examples": len(rows),
    }


# --- training ---------------------------------------------------------------------------------


def choice_labels(choice: dict) -> list[str]:
    """The task's label set from the model choice; raises BadInputError when it is missing or repeats a label."""
    labels = [str(label) for label in choice.get("labels") or []]
    if len(labels) < 2:
        raise BadInputError(
            f"the {ARCHITECTURE} student {choice.get('name')} needs the task's label set (model_choice.json "
            "`labels`, two or more): it answers only with a label; choose a generative student for this task"
        )
    if len({fold(label) for label in labels}) != len(labels):
        raise BadInputError(f"the label set {labels} names a label twice (ignoring case and spaces)")
    return labels


def labelled_rows(rows, labels: list[str]) -> tuple[list[dict], int]:
    """([{"input", "label": index}], how many rows were dropped): outputs matched to `labels`
    ignoring case and spaces; an output outside the set cannot be learned by a classifier."""
    index = {fold(label): i for i, label in enumerate(labels)}
    kept = [{"input": r["input"], "label": index[fold(r["output"])]} for r in rows if fold(r["output"]) in index]
    return kept, len(rows) - len(kept)


def classifier_max_length(lengths: list[int], cap: int) -> int:
    """The token cap: `cap`, or the 95th percentile of the inputs' lengths when that is lower (at least 8)."""
    if not lengths:
        return cap
    p95 = sorted(lengths)[math.ceil(0.95 * len(lengths)) - 1]
    return max(8, min(cap, p95))


def to_dataset(tokenizer, rows: list[dict], max_length: int):
    """A datasets.Dataset of input_ids, attention_mask and labels (unpadded: the collator pads)."""
    import datasets

    encoded = tokenizer([r["input"] for r in rows], truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [r["label"] for r in rows],
        }
    )


def label_metrics(prediction) -> dict:
    """The Trainer's validation metrics from an EvalPrediction: accuracy, macro F1, NLL (without
    label smoothing) and `selection`, which picks the best epoch and drives early stopping:
    accuracy, ties broken by the lower NLL. On an easy set accuracy is perfect after one epoch,
    while the model is still barely confident; by accuracy alone training would stop there."""
    logits, targets = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    predicted = logits.argmax(-1)
    f1s = []
    for k in np.union1d(predicted, targets):
        tp = float(((predicted == k) & (targets == k)).sum())
        fp, fn = float(((predicted == k) & (targets != k)).sum()), float(((predicted != k) & (targets == k)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    accuracy = float((predicted == targets).mean())
    probs = probabilities_from_logits(logits)
    loss = float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None)).mean())
    # NLL scaled below 1e-5: smaller than one example's worth of accuracy on up to 100,000 examples
    selection = accuracy - 1e-6 * min(loss, 10.0)
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)) if f1s else 0.0, "nll": loss, "selection": selection}


def best_accuracy(log_history: list[dict], best_step: int | None) -> float | None:
    """The validation accuracy of the kept epoch (the evaluation at `best_step`), None without validation."""
    evals = [e for e in log_history if "eval_accuracy" in e]
    kept = [e for e in evals if e.get("step") == best_step] or evals[-1:]
    return round(kept[0]["eval_accuracy"], 4) if kept else None


def train_classifier(
    model_path: Path | str, splits_dir: Path, choice: dict, cfg: TrainConfig, out_dir: Path, callbacks: tuple = ()
) -> dict:
    """Fine-tune an encoder classifier on the splits' (input, output label) rows, calibrate it on the
    validation split; write `out_dir/model`, `train_log.jsonl` and `train.json`; return the record.

    `callbacks`: extra TrainerCallbacks (the train stage's progress bar). Raises BadInputError for a
    choice without labels or training rows none of whose outputs is a label.
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    ccfg = ClassifierTrainConfig.from_train(cfg)
    labels = choice_labels(choice)
    set_seed(ccfg.seed)
    model, tokenizer = load_classifier(model_path, labels)
    train_rows, dropped = labelled_rows(split_rows(splits_dir, "train"), labels)
    val_rows, val_dropped = labelled_rows(split_rows(splits_dir, "validation"), labels)
    if not train_rows:
        raise BadInputError(f"no training example's output is one of the labels {labels}: nothing to train on")
    lengths = [len(tokenizer(r["input"])["input_ids"]) for r in train_rows]
    max_length = classifier_max_length(lengths, ccfg.max_length)
    train_ds, val_ds = to_dataset(tokenizer, train_rows, max_length), to_dataset(tokenizer, val_rows, max_length)
    setattr(model.config, MAX_LENGTH_KEY, max_length)  # inference truncates as training did

    world = distributed_world()
    cuda = torch.cuda.is_available()
    batch_size = max(world, ccfg.batch_size // world * world)  # each DDP process takes an equal slice (split_batches)
    validate = len(val_ds) > 0
    fingerprint = hashlib.sha256(
        json.dumps(
            [choice["path"], labels, ccfg.model_dump(), len(train_ds), max_length], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:12]
    ckpt_dir = Path(out_dir) / "checkpoints" / fingerprint
    total_steps = math.ceil(len(train_ds) / batch_size) * ccfg.epochs
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=ccfg.epochs,
        learning_rate=ccfg.learning_rate,
        weight_decay=ccfg.weight_decay,
        warmup_steps=ccfg.warmup_ratio,  # a float below 1 is a share of the steps
        label_smoothing_factor=ccfg.label_smoothing,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 32),
        accelerator_config={"split_batches": world > 1},
        eval_strategy="epoch" if validate else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=validate,
        metric_for_best_model="selection" if validate else None,  # accuracy, ties broken by NLL
        greater_is_better=True,
        logging_steps=max(1, min(50, int(total_steps) // 20)),
        report_to=[],
        seed=ccfg.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # batches of similar length pad (and compute) less
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    early = [EarlyStoppingCallback(early_stopping_patience=ccfg.patience)] if validate else []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds if validate else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=label_metrics,
        callbacks=[*early, *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # it would print every log dict on the terminal
    resume = last_complete_checkpoint(ckpt_dir)
    started = time.monotonic()
    with full_disk_explained(out_dir):  # torch and safetensors wrap a full disk in errors of their own
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.monotonic() - started
    calibration = calibrate(trainer.model, tokenizer, val_rows)

    record = {
        "base_model": choice["name"],
        "architecture": ARCHITECTURE,
        "labels": labels,
        "max_length": max_length,
        "train_examples": len(train_ds),
        "dropped_examples": {"train": dropped, "validation": val_dropped},  # outputs outside the label set
        "label_counts": {lab: sum(r["label"] == i for r in train_rows) for i, lab in enumerate(labels)},
        "epochs": ccfg.epochs,
        "epochs_trained": round(trainer.state.epoch or 0, 2),
        "learning_rate": ccfg.learning_rate,
        "batch_size": batch_size,
        "warmup_ratio": ccfg.warmup_ratio,
        "weight_decay": ccfg.weight_decay,
        "label_smoothing": ccfg.label_smoothing,
        "processes": world,
        "lora": False,  # a 22M-parameter encoder is fine-tuned whole
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "seconds": round(seconds, 1),
        "best_eval_accuracy": best_accuracy(trainer.state.log_history, trainer.state.best_global_step),
        "calibration": calibration,
        "resumed": bool(resume),
        "device": "cuda" if cuda else "cpu",
        "tokens_seen": int(sum(len(x) for x in train_ds["input_ids"]) * (trainer.state.epoch or ccfg.epochs)),
    }
    if trainer.is_world_process_zero():  # one writer; every process holds the same weights
        with full_disk_explained(out_dir), atomic_folder(Path(out_dir) / "model") as model_dir:
            trainer.model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        write_jsonl(Path(out_dir) / "train_log.jsonl", trainer.state.log_history)
        write_json(Path(out_dir) / "train.json", record)
    return record


# --- evaluation -------------------------------------------------------------------------------


def closed_label_set(references: list[str], labels: list[str] | None = None) -> list[str] | None:
    """The label set scores are broken down by: `labels` when the student has one, else the
    references' distinct values when they look like labels (each at most 4 words, at most 30 of
    them, each used twice on average), else None (an open-ended task)."""
    if labels:
        return list(labels)
    first: dict[str, str] = {}
    for r in references:  # each label as first written
        if r.strip():
            first.setdefault(fold(r), r.strip())
    distinct = list(first.values())
    short = all(len(r.split()) <= 4 for r in distinct)
    if short and len(references) >= 4 and 2 <= len(distinct) <= min(30, len(references) // 2):
        return sorted(distinct)
    return None


def label_report(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    """Per-label precision, recall, F1 and support, their macro F1 (over labels that occur), and the
    confusion table {labels, matrix}: rows are references, columns predictions, answers outside
    the set counted under "(other)". Labels are matched ignoring case and spaces."""
    index = {fold(label): i for i, label in enumerate(labels)}
    refs = [index.get(fold(r), -1) for r in references]
    preds = [index.get(fold(p), len(labels)) for p in predictions]
    columns = [*labels, OTHER] if len(labels) in preds else list(labels)
    matrix = [[0] * len(columns) for _ in labels]
    for r, p in zip(refs, preds, strict=True):
        if r >= 0:  # a reference outside the set has no row: it cannot be scored per label
            matrix[r][p] += 1
    per_label, f1s = {}, []
    for i, label in enumerate(labels):
        tp, support = matrix[i][i], sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
        if support or predicted:
            f1s.append(f1)
    return {
        "macro_f1": round(sum(f1s) / len(f1s), 4) if f1s else 0.0,
        "per_label": per_label,
        "confusion": {"labels": columns, "matrix": matrix},
    }


# --- a quick student, for generation in rounds ------------------------------------------------


def quick_classifier(
    model_path: Path | str,
    labels: list[str],
    train: list[dict],
    texts: list[str],
    epochs: int = 10,
    cfg: ClassifierTrainConfig | None = None,
) -> list[tuple[str, dict[str, float]]]:
    """(label, {label: probability}) for each of `texts`, from a classifier trained on `train`
    ({"input", "output"} rows; outputs outside `labels` are skipped) for `epochs` and thrown away.

    Seconds on a CPU for a few hundred short inputs: a plain loop over length-sorted batches with
    the student's learning rate, batch size and label smoothing, no validation, no checkpoints,
    nothing written. Seeded: the same rows give the same answers (a replayed run reaches the same rounds).
    """
    cfg = cfg or ClassifierTrainConfig()
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_classifier(model_path, labels)
    rows, _ = labelled_rows(train, labels)
    if not rows:
        raise BadInputError(f"no training row's output is one of the labels {labels}")
    lengths = [len(ids) for ids in tokenizer([r["input"] for r in rows])["input_ids"]]
    max_length = classifier_max_length(lengths, cfg.max_length)
    setattr(model.config, MAX_LENGTH_KEY, max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order), cfg.batch_size):
            batch = [rows[i] for i in order[start : start + cfg.batch_size]]
            encoded = tokenizer(
                [r["input"] for r in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
            loss = loss_fn(logits, torch.tensor([r["label"] for r in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return classify(model, tokenizer, texts) if texts else []
