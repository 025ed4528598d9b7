"""Running a student: batched greedy generation, and the answer normalisation scores use.

Shared by validation during training, evaluation and the demo, so all three see the model the
same way.
"""

from __future__ import annotations

import re
import string

import torch

from p2m.tasks.train_format import format_prompt

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def generate_outputs(model, tokenizer, architecture: str, instruction: str, inputs: list[str], batch_size: int = 16,
                     max_new_tokens: int = 64) -> list[str]:
    """Greedy outputs (first line) for `inputs`; sorted by length into batches so they pad little."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    outputs: list[str] = [""] * len(inputs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([format_prompt(instruction, inputs[i]) for i in idx], return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if architecture == "decoder-only":
            out = out[:, batch["input_ids"].shape[1]:]
        for i, seq in zip(idx, out):
            outputs[i] = tokenizer.decode(seq, skip_special_tokens=True).strip().split("\n", 1)[0].strip()
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
    return sum(normalise_answer(p) == normalise_answer(r) for p, r in zip(predictions, references)) / len(references)
