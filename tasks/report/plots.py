"""The run's plots: the loss curve, the student against the teacher on held-out examples, and for a
label task the student's confusion matrix."""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.core.run_store import atomic_path, read_jsonl


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as a PNG at `path`, atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_results(out_dir: Path, metrics: dict) -> list[Path]:
    """`loss_curve.png` from train_log.jsonl and `student_vs_teacher.png` from the metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    log = read_jsonl(out_dir / "train_log.jsonl")
    train = [(e["step"], e["loss"]) for e in log if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e]
    if train:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*zip(*train, strict=True), label="train loss")
        if val:
            ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
        ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("Training")
        save_figure(fig, out_dir / "loss_curve.png")
        made.append(out_dir / "loss_curve.png")
    held = metrics["student"].get("held_out")
    if held:
        names = ["exact_match", "chrf", "bertscore_f1"]
        scale = {"exact_match": 100, "chrf": 1, "bertscore_f1": 100}
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [held[n] * scale[n] for n in names], width=0.4, label="student")
        if metrics["teacher"].get("held_out"):
            ax.bar(
                [x + 0.2 for x in xs],
                [metrics["teacher"]["held_out"][n] * scale[n] for n in names],
                width=0.4,
                label="teacher",
            )
        ax.set_xticks(list(xs), ["exact match %", "chrF++", "BERTScore F1 %"]), ax.set_ylim(0, 100), ax.legend()
        ax.set_title("Held-out examples: student vs teacher")
        save_figure(fig, out_dir / "student_vs_teacher.png")
        made.append(out_dir / "student_vs_teacher.png")
    if held and held.get("confusion"):
        made.append(plot_confusion(held["confusion"], out_dir / "confusion_matrix.png"))
    return made


def plot_rounds(rounds: list[dict], path: Path) -> Path:
    """`path`: each generation round's quick-student validation accuracy against the teacher tokens
    spent so far (generation.json `rounds`); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rounds if r.get("validation_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["teacher_tokens"] / 1000 for r in scored]
    ys = [100 * r["validation_accuracy"] for r in scored]
    ax.plot(xs, ys, marker="o")
    for r, x, y in zip(scored, xs, ys, strict=True):
        ax.annotate(f"round {r['round']}: {r['examples']} ex.", (x, y), textcoords="offset points", xytext=(4, -12))
    ax.set_xlabel("teacher tokens so far (thousands)"), ax.set_ylabel("validation accuracy %")
    ax.set_ylim(0, 100), ax.set_title("Generation rounds: the quick student")
    save_figure(fig, path)
    return path


def plot_confusion(confusion: dict, path: Path) -> Path:
    """`path`: the confusion table ({labels, matrix}: rows references, columns predictions) as a
    heat map with the counts written in; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, matrix = confusion["labels"], confusion["matrix"]
    rows = columns[: len(matrix)]  # "(other)" is a column only: references are labels
    side = 2.5 + 0.45 * len(columns)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted"), ax.set_ylabel("reference"), ax.set_title("Held-out examples: confusion matrix")
    peak = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:  # dark cells get white text
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    save_figure(fig, path)
    return path
