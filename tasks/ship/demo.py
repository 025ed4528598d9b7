"""The demo: a Gradio page to try a run's model.

`p2m demo RUN_DIR` serves it (127.0.0.1 by default; never a public share link, which needs the
network). The publish-demo stage (`p2m.tasks.stages.demo`) checks it in the pipeline; the demo
service (`p2m.tasks.ship.demo_service`) keeps it serving.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.processes import check_exposure
from p2m.tasks.core.run_store import read_json
from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import classify
from p2m.tasks.student.inference import generate_outputs, load_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def make_predictor(run_dir: Path):
    """A function text -> the model's answer, for the model in `run_dir/model`: the answer's text,
    or for an encoder-classifier {label: probability} (what a gr.Label shows)."""
    spec = read_json(run_dir / "spec.json")
    arch = read_json(run_dir / "model_choice.json")["architecture"]
    model, tokenizer = load_model(run_dir / "model", arch)
    if arch == CLASSIFIER:

        def probabilities(text: str) -> dict[str, float]:
            return classify(model, tokenizer, [text])[0][1]

        return probabilities, spec

    def predict(text: str) -> str:
        return generate_outputs(model, tokenizer, arch, spec["instruction"], [text])[0]

    return predict, spec


def build_demo(run_dir: Path):
    """The Gradio app for a run folder; its API endpoint is `/predict`."""
    import gradio as gr

    predict, spec = make_predictor(Path(run_dir))
    labels = read_json(Path(run_dir) / "model_choice.json")["architecture"] == CLASSIFIER
    metrics_path = Path(run_dir) / "metrics.json"
    scores = ""
    if metrics_path.exists():
        held = read_json(metrics_path).get("student", {}).get("held_out")
        if held:
            scores = f"Held-out exact match {held['exact_match']:.0%}, chrF++ {held['chrf']:.1f}."
    return gr.Interface(
        fn=predict,
        inputs=gr.Textbox(label="Input", lines=3),
        # A classifier's answer is a label: shown with every label's probability (the top one first).
        outputs=gr.Label(label="Label", num_top_classes=10) if labels else gr.Textbox(label="Output"),
        title="p2m demo",
        description=f"{spec['instruction']}\n\n{scores}",
        examples=[[d["input"]] for d in spec.get("demonstrations", [])[:5]],
        api_name="predict",
        flagging_mode="never",
    )


def check_demo_inputs(
    run_dir: Path, host: str, port: int, auth: str | None, insecure: bool = False
) -> tuple[str, str] | None:
    """The login pair from "user:password", once the run folder has a model and the port is free.

    Raises P2MError for a folder without a trained model, a port already in use, an auth
    string that is not user:password, and a host beyond loopback with no password unless
    `insecure` (`p2m.tasks.core.processes.check_exposure`).
    """
    import socket

    if not (Path(run_dir) / "model").is_dir() or not (Path(run_dir) / "spec.json").is_file():
        raise P2MError(f"{run_dir} has no trained model; run `p2m run PROMPT --out {run_dir}` first")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise P2MError(
                f"cannot serve on {host}:{port} ({e.strerror}); pass another --port "
                "(`p2m publish` replaces a demo it started on the same port)"
            ) from None
    check_exposure(host, bool(auth), insecure, "the demo", "P2M_DEMO_AUTH (user:password)")
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise P2MError("--auth (or P2M_DEMO_AUTH) must be user:password")
    return user, password


def serve_demo(
    run_dir: Path, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None, block: bool = True
):
    """Launch the demo; with `block=False` returns (app, url) and keeps serving in the background."""
    app = build_demo(run_dir)
    app.launch(
        server_name=host, server_port=port or None, share=False, auth=auth, prevent_thread_lock=not block, quiet=True
    )
    return app, app.local_url


def ask_demo(url: str, run_dir: Path, auth: str | None = None) -> tuple[str, str]:
    """(a demonstration's input, the served model's answer to it), asked through the page's API."""
    from gradio_client import Client

    spec = read_json(Path(run_dir) / "spec.json")
    sample = spec["demonstrations"][0]["input"] if spec.get("demonstrations") else "hello"
    client = Client(url, auth=tuple(auth.split(":", 1)) if auth else None, verbose=False)
    answer = client.predict(sample, api_name="/predict")
    # A gr.Label answers {"label": top label, "confidences": [...]}: the answer is its label.
    return sample, answer["label"] if isinstance(answer, dict) else answer
