"""Running a student: loading it, batched greedy generation, and the answer normalisation scores use.

Shared by training (validation), evaluation and the demo, so all three see the model the same way.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch
from p2m.tasks.core.errors import P2MError
from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import classify, load_classifier
from p2m.tasks.student.format import clean_output, format_prompt


def load_model(path: Path | str, architecture: str):
    """(model, tokenizer) from a folder; decoder-only tokenizers get a pad token and left padding.

    Raises P2MError for a folder transformers cannot load (a broken config.json, missing weights).
    An encoder-classifier is loaded as trained (its labels from its config).
    """
    if architecture == CLASSIFIER:
        return load_classifier(path)
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    cls = AutoModelForSeq2SeqLM if architecture == "encoder-decoder" else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = cls.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as e:  # what transformers raises for a damaged or missing folder
        raise P2MError(
            f"cannot load the model in {path} ({e.__class__.__name__}: {str(e)[:160]}); "
            "train it again (`p2m train RUN_DIR`) or fix the folder"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if architecture == "decoder-only":
        tokenizer.padding_side = "left"  # generation appends on the right
    return model, tokenizer


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def generate_outputs(
    model,
    tokenizer,
    architecture: str,
    instruction: str,
    inputs: list[str],
    batch_size: int = 16,
    max_new_tokens: int = 64,
) -> list[str]:
    """Greedy outputs (first line) for `inputs`; sorted by length into batches so they pad little.

    An encoder-classifier answers each input's most probable label (it sees the input alone).
    """
    if architecture == CLASSIFIER:
        return [label for label, _ in classify(model, tokenizer, inputs, batch_size)]
    was_training = model.training
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    outputs: list[str] = [""] * len(inputs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([format_prompt(instruction, inputs[i]) for i in idx], return_tensors="pt", padding=True).to(
            model.device
        )
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        if architecture == "decoder-only":
            out = out[:, batch["input_ids"].shape[1] :]
        for i, seq in zip(idx, out, strict=True):
            outputs[i] = clean_output(tokenizer.decode(seq, skip_special_tokens=True))
    if was_training:
        model.train()
    return outputs


def normalise_answer(text: str) -> str:
    """Lower-case, punctuation and articles removed, whitespace collapsed (SQuAD-style)."""
    text = _PUNCT.sub(" ", text.lower())
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    if not references:
        return 0.0
    pairs = zip(predictions, references, strict=False)
    return sum(normalise_answer(p) == normalise_answer(r) for p, r in pairs) / len(references)
