"""`p2m export`: the run's student as GGUF (llama.cpp) or ONNX (ONNX Runtime), checked before it is kept.

Input: a run folder with `model/`, `splits/`, `spec.json` and `model_choice.json` (made by `p2m run`).
Output: `RUN_DIR/exports/<format>-<quant>/` (gguf-f16, gguf-q8_0, onnx-fp32, onnx-int8) holding the
model file(s), the tokenizer, and `export.json`: size in MB, exact match on the held-out test split
next to the safetensors model's, agreement with it example by example, and ms per example at
batch 1 on CPU (p50, p95). `exports/reference.json` keeps the safetensors model's answers and
timings, keyed by a hash of the model, so exporting twice measures the original once.

An export is built in a temporary folder and moved into place only when its exact match is at
most `serve.tolerance_points` (1) below the original's; otherwise the export fails with both
numbers and the previous export of that kind, if any, is left as it was.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from p2m.tasks.core.config import ServeConfig
from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.run_store import content_hash, read_json, split_rows, write_json
from p2m.tasks.ship.export_report import model_hash, update_reports
from p2m.tasks.ship.gguf_export import LlamaCppStudent, convert_to_gguf
from p2m.tasks.ship.onnx_export import OnnxStudent, export_onnx, generation_info, quantize_int8
from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import classifier_info
from p2m.tasks.student.runtime import TorchStudent, measure

FORMATS = ("gguf", "onnx")
DEFAULT_QUANT = {"gguf": "f16", "onnx": "fp32"}
QUANTS = {"gguf": ("f16", "q8_0"), "onnx": ("fp32", "int8")}
MODEL_FILES = ("*.gguf", "*.onnx", "*.onnx.data", "*.safetensors")


def export_name(fmt: str, quantize: str | None) -> str:
    """`gguf-q8_0`, `onnx-fp32`...; raises BadInputError for a quantization the format does not have."""
    if fmt not in FORMATS:
        raise BadInputError(f"--format must be gguf or onnx, not {fmt}")
    quant = quantize or DEFAULT_QUANT[fmt]
    if quant not in QUANTS[fmt]:
        other = "gguf" if fmt == "onnx" else "onnx"
        raise BadInputError(
            f"--quantize {quant} is not a {fmt} option (use {' or '.join(QUANTS[fmt][1:])}, or --format {other})"
        )
    return f"{fmt}-{quant}"


def check_run_for_export(run_dir: Path, fmt: str) -> dict:
    """The run's spec and model choice; raises BadInputError for a folder without a trained model,
    and for GGUF on an encoder-decoder student (llama.cpp runs decoder-only models)."""
    run_dir = Path(run_dir)
    missing = [n for n in ("model", "splits", "spec.json", "model_choice.json") if not (run_dir / n).exists()]
    if missing:
        raise BadInputError(f"{run_dir} has no {', '.join(missing)}; run `p2m run PROMPT --out {run_dir}` first")
    choice = read_json(run_dir / "model_choice.json")
    if fmt == "gguf" and choice["architecture"] != "decoder-only":
        raise BadInputError(
            f"GGUF (llama.cpp) runs decoder-only models and this student ({choice['name']}) is "
            f"{choice['architecture']}: use --format onnx"
        )
    return {"spec": read_json(run_dir / "spec.json"), "choice": choice}


def held_out_rows(run_dir: Path) -> list[dict]:
    """The run's held-out test split (input, output)."""
    rows = [{"input": r["input"], "output": r["output"]} for r in split_rows(run_dir, "test")]
    if not rows:
        raise BadInputError(
            f"{run_dir}/splits has no test examples to check an export on; run `p2m run` with more data"
        )
    return rows


def files_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for pattern in MODEL_FILES for p in Path(folder).glob(pattern)) / 1e6, 1)


def reference_scores(run_dir: Path, cfg: ServeConfig, max_tokens: int) -> dict:
    """The safetensors model on the held-out split at batch 1 (cached in exports/reference.json)."""
    run_dir = Path(run_dir)
    path = run_dir / "exports" / "reference.json"
    identity = {
        "model_hash": model_hash(run_dir),
        "max_tokens": max_tokens,
        "test_hash": content_hash(run_dir / "splits"),
    }
    if path.exists():
        cached = read_json(path)
        if all(cached.get(k) == v for k, v in identity.items()):
            return cached
    info = check_run_for_export(run_dir, "onnx")
    student = TorchStudent(run_dir / "model", info["choice"]["architecture"], info["spec"]["instruction"], max_tokens)
    scores = measure(student, held_out_rows(run_dir))
    record = identity | {"format": "safetensors", "size_mb": files_mb(run_dir / "model")} | scores
    write_json(path, record)
    return record


def load_student(
    export_dir: Path,
    architecture: str,
    instruction: str,
    max_tokens: int,
    parallel: int = 1,
    threads: int | None = None,
):
    """A runtime for an export folder (GGUF in llama.cpp, ONNX in ONNX Runtime), with `predict(text)`."""
    export_dir = Path(export_dir)
    ggufs = sorted(export_dir.glob("*.gguf"))
    if ggufs:
        return LlamaCppStudent(ggufs[0], export_dir, instruction, max_tokens, parallel=parallel, threads=threads)

    return OnnxStudent(export_dir, architecture, instruction, max_tokens, threads=threads)


def export_student(run_dir: Path, fmt: str, quantize: str | None, cfg: ServeConfig, max_tokens: int) -> dict:
    """Export, check and keep the run's student; returns the export record (also in export.json).

    Raises P2MError when the export's held-out exact match is more than `cfg.tolerance_points`
    from the original's (nothing is kept), or when the conversion itself fails.
    """
    run_dir = Path(run_dir).resolve()
    name = export_name(fmt, quantize)
    info = check_run_for_export(run_dir, fmt)
    arch, instruction = info["choice"]["architecture"], info["spec"]["instruction"]
    reference = reference_scores(run_dir, cfg, max_tokens)
    exports = run_dir / "exports"
    exports.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=exports, prefix=f".{name}."))
    try:
        started = time.monotonic()
        build_export(run_dir / "model", arch, fmt, name.split("-", 1)[1], work, cfg)
        seconds = round(time.monotonic() - started, 1)
        student = load_student(work, arch, instruction, max_tokens, threads=cfg.threads)
        try:
            scores = measure(student, held_out_rows(run_dir))
        finally:
            student.close()
        same = sum(a == b for a, b in zip(scores["predictions"], reference["predictions"], strict=False))
        agreement = same / max(1, scores["n"])
        record = {
            "format": fmt,
            "quantize": name.split("-", 1)[1],
            "architecture": arch,
            "model_hash": reference["model_hash"],
            "size_mb": files_mb(work),
            "exact_match": scores["exact_match"],
            "reference_exact_match": reference["exact_match"],
            "agreement": round(agreement, 4),
            "n": scores["n"],
            "ms_p50": scores["ms_p50"],
            "ms_p95": scores["ms_p95"],
            "reference_ms_p50": reference["ms_p50"],
            "reference_ms_p95": reference["ms_p95"],
            "reference_size_mb": reference["size_mb"],
            "max_tokens": max_tokens,
            "export_seconds": seconds,
            "test_set": "held_out",
            "files": sorted(p.name for pattern in MODEL_FILES for p in work.glob(pattern)),
        }
        # One-sided: an export may not lose more than the tolerance. Quantization flips borderline answers
        # both ways, and one example is already 1.9 points of a 52-example split: an export that scores
        # higher is kept, with its agreement (answers identical to the original's) in the record.
        gap = (reference["exact_match"] - scores["exact_match"]) * 100
        if gap > cfg.tolerance_points:
            raise P2MError(
                f"the {name} export scores {scores['exact_match']:.1%} exact match on the held-out split against "
                f"{reference['exact_match']:.1%} for the original model ({gap:.1f} points lower, at most "
                f"{cfg.tolerance_points:g} allowed); it was not kept"
            )
        write_json(work / "export.json", record)
        target = exports / name
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        update_reports(run_dir)  # metrics.json, summary.json and the model card gain this format
        return record | {"path": str(target)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_export(model_dir: Path, architecture: str, fmt: str, quant: str, out_dir: Path, cfg: ServeConfig) -> None:
    """Write the model file(s) and the tokenizer of one export into `out_dir`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(out_dir)  # an export folder is self-contained: the server tokenizes with it
    if fmt == "gguf":
        convert_to_gguf(model_dir, out_dir / f"model-{quant}.gguf", quant, cfg.converter_dir)
        return

    if architecture == CLASSIFIER:  # what the graph's logits mean: labels, temperature, token cap
        write_json(out_dir / "classifier.json", classifier_info(model_dir))
    else:
        write_json(out_dir / "generation.json", generation_info(model_dir, tokenizer))
    graphs = export_onnx(model_dir, architecture, out_dir)
    if quant == "int8":
        quantize_int8(graphs)


def current_export(run_dir: Path, name: str) -> dict | None:
    """The record of `exports/<name>` if it was made from the run's current model, else None."""
    record_path = Path(run_dir) / "exports" / name / "export.json"
    if not record_path.exists():
        return None
    record = read_json(record_path)
    return record | {"path": str(record_path.parent)} if record.get("model_hash") == model_hash(run_dir) else None
