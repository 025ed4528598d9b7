"""One report, three renderings: terminal, Prefect markdown artifact, model card."""

from p2m.tasks.report.render import model_card, summary_markdown, summary_text

METRICS = {
    "student": {"held_out": {"exact_match": 0.9, "chrf": 92.5, "bertscore_f1": 0.98, "ms_per_example": 130.0, "n": 20}},
    "teacher": {"held_out": {"exact_match": 1.0, "chrf": 100.0, "bertscore_f1": 1.0, "ms_per_example": 700.0, "n": 20}},
    "formats": {"gguf-q8_0": {"size_mb": 145.1, "exact_match": 0.9, "ms_p50": 40, "ms_p95": 60, "n": 20}},
}
SUMMARY = {
    "run_dir": "/runs/dates",
    "finished": True,
    "total_seconds": 100.0,
    "stages": [
        {"stage": "parse", "state": "Completed", "seconds": 1.0},
        {"stage": "train", "state": "Cached", "seconds": 0.5},
    ],
    "metrics": METRICS,
    "formats": METRICS["formats"],
    "teacher_title": "Qwen (1.5B)",
    "model_name": "smollm2",
    "student_size_mb": 538.0,
    "generated": 200,
    "generation_stop": "reached the 200 examples asked for",
    "model": "/runs/dates/model",
    "generation_usage": {
        "requests": 237,
        "cached": 0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.0,
        "price_known": True,
    },
    "generation_bounds": {"request_cap": 4000, "cost_budget_usd": 10.0},
    "generation_rates": {"examples_per_minute": 14.6, "teacher_tokens_per_s": 17.2, "vote_agreement": 0.934},
}
TRAIN = {
    "base_model": "smollm2",
    "architecture": "decoder-only",
    "train_examples": 164,
    "epochs": 3,
    "learning_rate": 5e-5,
    "batch_size": 6,
    "max_length": 40,
    "lora": False,
    "device": "cpu",
    "train_loss": 0.06,
}


def test_terminal_and_markdown_say_the_same_things():
    text, markdown = summary_text(SUMMARY), summary_markdown(SUMMARY)
    for fact in (
        "Completed",
        "Cached",
        "held_out (20 examples)",
        "0.9",
        "1.0",
        "gguf-q8_0",
        "145.1",
        "Qwen (1.5B)",
        "smollm2 (538.0 MB)",
        "200 examples from 237 teacher requests (cap 4000)",
        "of $10.00 budget",
        "14.6 examples/min, teacher 17.2 tokens/s, vote agreement 93%",
        "p2m demo /runs/dates",
    ):
        assert fact in text and fact in markdown, fact
    assert "| exact_match | 0.9 | 1.0 |" in markdown and "Run folder: `/runs/dates`" in markdown


def test_the_model_card_has_usage_training_scores_and_formats():
    card = model_card("Rewrite the date as ISO 8601.", TRAIN, METRICS, "Qwen (1.5B)")
    assert card.startswith("---\nlibrary_name: transformers\nbase_model: smollm2")
    assert "Rewrite the date as ISO 8601.\n\nInput: <your input>\nOutput:" in card
    assert "Training data written by Qwen (1.5B)." in card
    assert "## Scores: held_out (20 examples)" in card and "| exact_match | 0.9 | 1.0 |" in card
    assert "## Formats (held-out split, CPU, batch 1)" in card and "| gguf-q8_0 | 145.1 | 90.0% | 40 | 60 |" in card


def test_labels_the_teacher_rarely_labels_back_are_named():
    from p2m.tasks.report.render import facts

    per_label = {
        "inform": {"written": 47, "accepted": 7, "acceptance": 0.149},
        "goodbye": {"written": 21, "accepted": 15, "acceptance": 0.714},
        "req_more": {"written": 47, "accepted": 9, "acceptance": 0.191},
    }
    usage = {"requests": 718, "cached": 0, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0}
    lines = dict(facts({"generation_usage": usage, "generation_per_label": per_label}))
    assert "for inform (15%), req_more (19%):" in lines["weak labels"]
    assert "weak labels" not in dict(
        facts({"generation_usage": usage, "generation_per_label": {"a": per_label["goodbye"]}})
    )


def test_the_summary_gives_each_rounds_score():
    from p2m.tasks.report.render import facts

    usage = {"requests": 243, "cached": 0, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0}
    rounds = [{"round": 1, "validation_accuracy": 0.8333}, {"round": 2, "validation_accuracy": 1.0}]
    lines = dict(facts({"generation_usage": usage, "generation_rounds": rounds}))
    assert lines["rounds"].startswith("2, the quick student's validation accuracy 83% -> 100%")
    assert "rounds" not in dict(facts({"generation_usage": usage}))
