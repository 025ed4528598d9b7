"""Stage, evaluate: is the small model as good as the LLM that was prompted?

Scores the student, and the teacher prompted few-shot with the user's demonstrations (the same
prompt the user had), on the same held-out examples, and on a real test set when one is given:
exact match (normalised), chrF++ (`sacrebleu.CHRF(word_order=2)`) and BERTScore F1 (`bert_score`;
offline its backbone is MiniLM, whose numbers are not comparable with published roberta-large
ones: `metrics.json` says which backbone was used). For an encoder-classifier student, or whenever
the references are a closed set of labels, each system's scores also hold per-label precision,
recall and F1, their macro F1 and a confusion table (`p2m.tasks.student.classifier.label_report`).
Output: `metrics.json` ({system: {test_set: scores}}), `predictions.jsonl`, and PNG plots.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from p2m.tasks.core.aio import run_sync
from p2m.tasks.core.config import EvalConfig
from p2m.tasks.core.run_store import split_rows, write_json, write_jsonl
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.report.plots import plot_results
from p2m.tasks.storage.datafiles import read_pairs
from p2m.tasks.storage.embedded import minilm_path
from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import closed_label_set, label_report, model_labels
from p2m.tasks.student.inference import exact_match, generate_outputs, load_model
from p2m.tasks.teacher.prompts import answer_messages, clean_answer, label_schema, parse_label


def chrf_pp(predictions: list[str], references: list[str]) -> float:
    """Corpus chrF++ (character n-grams plus word bigrams), 0-100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF(word_order=2).corpus_score(predictions, [references]).score)


def bertscore_backbone(cfg: EvalConfig) -> str:
    return cfg.bertscore_model or "all-MiniLM-L6-v2 (embedded)"


@functools.cache
def bertscorer(model_type: str | None, num_layers: int | None):
    """One BERTScore scorer per backbone, loaded once (bert_score.score reloads it on every call).

    Offline default backbone: the embedded MiniLM, layer 6.
    """
    import bert_score

    return bert_score.BERTScorer(
        model_type=model_type or str(minilm_path()),
        num_layers=num_layers or (6 if model_type is None else None),
        batch_size=64,
    )


def bertscore_f1(predictions: list[str], references: list[str], cfg: EvalConfig) -> float:
    """Mean BERTScore F1 with the configured backbone."""
    # bert_score 0.3.13 breaks on an empty string under transformers 5 (it calls a removed
    # tokenizer method); an empty prediction is wrong anyway, so it is scored as "-".
    preds = [p.strip() or "-" for p in predictions]
    _, _, f1 = bertscorer(cfg.bertscore_model, cfg.bertscore_num_layers).score(preds, references)
    return float(f1.mean())


def score(predictions: list[str], references: list[str], cfg: EvalConfig) -> dict:
    return {
        "exact_match": round(exact_match(predictions, references), 4),
        "chrf": round(chrf_pp(predictions, references), 2),
        "bertscore_f1": round(bertscore_f1(predictions, references, cfg), 4),
        "n": len(references),
    }


async def predict_teacher(llm, spec: PromptSpec, inputs: list[str], max_tokens: int, max_demos: int) -> list[str]:
    """The teacher's few-shot answers (temperature 0) to `inputs`, sent concurrently under the limits.

    The user's own prompt, as they would send it; for a classification task the answer is held
    to the label set (the student can answer nothing else either, so the comparison is fair).
    """
    import asyncio

    demos = [d.model_dump() for d in spec.demonstrations[:max_demos]]
    labels = spec.labels if spec.kind == "classification" else None
    replies = await asyncio.gather(
        *[
            llm.acomplete(
                answer_messages(spec.instruction, demos, x),
                temperature=0.0,
                max_tokens=24 if labels else max_tokens,
                purpose="teacher_baseline",
                response_format=label_schema(labels) if labels else None,
            )
            for x in inputs
        ]
    )
    if labels:
        return [(parse_label(r[0], labels) or clean_answer(r[0])) if r else "" for r in replies]
    return [clean_answer(r[0]) if r else "" for r in replies]


def test_sets(splits_dir: Path, eval_data: Path | None) -> dict[str, list[dict]]:
    """{"held_out": rows, "eval_data": rows?}: the test split and the user's real test set."""
    sets = {"held_out": split_rows(splits_dir, "test")}
    if eval_data:
        sets["eval_data"] = read_pairs(eval_data)
    return sets


def evaluate_run(
    spec: PromptSpec,
    splits_dir: Path,
    model_dir: Path,
    architecture: str,
    cfg: EvalConfig,
    out_dir: Path,
    llm=None,
    teacher_name: str | None = None,
) -> dict:
    """Score student (and teacher when `llm` is given); write metrics, predictions and plots.

    The model card is written by the evaluate task around this (`p2m.flows.run.stage_tasks`): the
    card's renderer is not part of what evaluation computes, so editing it does not re-run evaluation.
    """
    model, tokenizer = load_model(model_dir, architecture)
    labels = model_labels(model) if architecture == CLASSIFIER else None
    size_mb = round(sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) / 1e6, 1)
    metrics: dict = {"student": {}, "teacher": {}}
    predictions = []
    for name, rows in test_sets(splits_dir, cfg.eval_data).items():
        inputs, refs = [r["input"] for r in rows], [r["output"] for r in rows]
        if not rows:
            continue
        started = time.perf_counter()
        student = generate_outputs(
            model, tokenizer, architecture, spec.instruction, inputs, cfg.batch_size, cfg.max_new_tokens
        )
        ms = (time.perf_counter() - started) * 1000 / len(rows)
        metrics["student"][name] = score(student, refs, cfg) | {"ms_per_example": round(ms, 1), "size_mb": size_mb}
        label_set = closed_label_set(refs, labels)
        if label_set:
            metrics["student"][name] |= label_report(student, refs, label_set)
        teacher = [None] * len(rows)
        if llm is not None:
            started, cached_before = time.perf_counter(), llm.meter.cached
            teacher = run_sync(predict_teacher(llm, spec, inputs, cfg.max_new_tokens, cfg.teacher_demos))
            ms = (time.perf_counter() - started) * 1000 / len(rows)
            from_cache = llm.meter.cached - cached_before
            # Answers replayed from the request cache say nothing of the teacher's speed: no timing then.
            timing = {} if from_cache == len(rows) else {"ms_per_example": round(ms, 1)}
            metrics["teacher"][name] = (
                score(teacher, refs, cfg) | timing | {"model": llm.endpoint.model, "answers_from_cache": from_cache}
            )
            if label_set:
                metrics["teacher"][name] |= label_report(teacher, refs, label_set)
        predictions += [
            {"test_set": name, "input": x, "reference": y, "student": s, "teacher": t}
            for x, y, s, t in zip(inputs, refs, student, teacher, strict=True)
        ]
    metrics["info"] = {"bertscore_backbone": bertscore_backbone(cfg), "teacher": teacher_name}
    if cfg.bertscore_model is None:
        metrics["info"]["note"] = (
            "BERTScore from a MiniLM backbone is not comparable with published roberta-large scores"
        )
    write_json(out_dir / "metrics.json", metrics)
    write_jsonl(out_dir / "predictions.jsonl", predictions)
    plot_results(out_dir, metrics)
    return metrics
