"""What every way of running a student shares: the prompt it sees, the answer it gives, timing.

A runtime (the safetensors model in transformers, a GGUF file in llama.cpp, an ONNX export in
ONNX Runtime) answers one input at a time with `predict(text) -> Answer`. The prompt is built by
`format_prompt` and tokenized by the student's own tokenizer exactly as in training and
evaluation (`p2m.tasks.student.inference.generate_outputs`), and the answer is cleaned the same way, so
an export, the server and evaluation can be compared example by example.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import classify, encode_input, input_max_length
from p2m.tasks.student.format import clean_output, format_prompt
from p2m.tasks.student.inference import exact_match, load_model


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    probabilities: dict[str, float] | None = None  # {label: probability} from an encoder-classifier, else None


def prompt_ids(tokenizer, instruction: str, text: str) -> list[int]:
    """Token ids of the training prompt for `text` (special tokens added as in training)."""
    return list(tokenizer(format_prompt(instruction, text))["input_ids"])


def eos_ids(model_dir: Path, tokenizer) -> list[int]:
    """Token ids that end generation: the generation config's, else the tokenizer's EOS."""
    import json

    eos = None
    config = Path(model_dir) / "generation_config.json"
    if config.exists():
        eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


class TorchStudent:
    """The safetensors model in transformers, one input at a time (the reference exports are checked against)."""

    def __init__(self, model_dir: Path, architecture: str, instruction: str, max_tokens: int):

        self.model, self.tokenizer = load_model(model_dir, architecture)
        self.architecture, self.instruction, self.max_tokens = architecture, instruction, max_tokens

    def predict(self, text: str) -> Answer:
        import torch

        if self.architecture == CLASSIFIER:
            return self.classify(text)
        ids = prompt_ids(self.tokenizer, self.instruction, text)
        batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        with torch.inference_mode():
            out = self.model.generate(
                **batch, max_new_tokens=self.max_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )
        new = out[0, len(ids) :] if self.architecture == "decoder-only" else out[0]
        return Answer(clean_output(self.tokenizer.decode(new, skip_special_tokens=True)), len(ids), int(new.shape[0]))

    def classify(self, text: str) -> Answer:
        """An encoder-classifier's answer: the most probable label, with every label's probability."""
        label, probabilities = classify(self.model, self.tokenizer, [text])[0]
        ids = encode_input(self.tokenizer, text, input_max_length(self.model, self.tokenizer))
        return Answer(label, len(ids), 1, probabilities)

    def close(self) -> None:
        pass


def measure(student, rows: list[dict]) -> dict:
    """Answer every row at batch 1 after one untimed warm-up; returns predictions, exact match and
    ms per example (p50, p95)."""
    predictions, ms = [], []
    if rows:
        student.predict(rows[0]["input"])  # warm-up (first-call allocations, lazy init), not timed
    for row in rows:
        started = time.perf_counter()
        predictions.append(student.predict(row["input"]).text)
        ms.append((time.perf_counter() - started) * 1000)
    return {
        "predictions": predictions,
        "exact_match": round(exact_match(predictions, [r["output"] for r in rows]), 4),
        "n": len(rows),
        "ms_p50": round(percentile(ms, 50), 1),
        "ms_p95": round(percentile(ms, 95), 1),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation, as numpy's default); 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return (
        float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])
        if 0 < q < 100
        else float(min(values) if q <= 0 else max(values))
    )
