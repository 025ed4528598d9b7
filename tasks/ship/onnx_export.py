"""Any student as ONNX, run by ONNX Runtime with greedy decoding.

The export is torch's own ONNX exporter (`torch.onnx.export(dynamo=True)`): `optimum-onnx`, the
usual tool, pins transformers<4.58 and p2m needs 5.x. The graphs take the whole sequence and
return the logits of its last position (no KV cache: students answer in a few tokens, and a graph
without cache inputs is one that any ONNX runtime runs as it is):

- decoder-only: `model.onnx` (input_ids, attention_mask -> next-token logits);
- encoder-decoder: `encoder.onnx` (input_ids, attention_mask -> hidden states) and `decoder.onnx`
  (decoder_input_ids, encoder_hidden_states, attention_mask -> next-token logits);
- encoder-classifier: `model.onnx` (input_ids, attention_mask -> one logit per label); its labels,
  temperature and token cap go beside it in `classifier.json`, and the answer is the top label.

`quantize_int8` applies ONNX Runtime's dynamic int8 quantization (weights int8, activations
quantized at run time), which needs no calibration data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from p2m.tasks.student.classifier import ARCHITECTURE as CLASSIFIER
from p2m.tasks.student.classifier import answers_from_probabilities, encode_input, probabilities_from_logits
from p2m.tasks.student.format import clean_output
from p2m.tasks.student.inference import load_model
from p2m.tasks.student.runtime import Answer, eos_ids, prompt_ids

GRAPHS = {"decoder-only": ("model",), "encoder-decoder": ("encoder", "decoder"), CLASSIFIER: ("model",)}


def _wrappers(model, architecture: str):
    """torch modules whose forward is exactly what each ONNX graph computes."""
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            # Positions count real tokens only, so left-padded rows see the positions training did.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
            )
            return out.logits[:, -1, :]

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class Seq2SeqDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, decoder_input_ids, encoder_hidden_states, attention_mask):
            out = self.model(
                encoder_outputs=(encoder_hidden_states,),
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            )
            return out.logits[:, -1, :]

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    if architecture == "decoder-only":
        return {"model": Decoder()}
    if architecture == CLASSIFIER:
        return {"model": Classifier()}
    return {"encoder": Encoder(), "decoder": Seq2SeqDecoder()}


def export_onnx(model_dir: Path, architecture: str, out_dir: Path) -> list[Path]:
    """Write the ONNX graph(s) of the transformers folder `model_dir` into `out_dir`; returns their paths."""
    import torch
    from torch.export import Dim

    model, _ = load_model(model_dir, architecture)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Example inputs of size 2 or more in every dynamic dimension: torch.export specialises sizes 0 and 1.
    batch, seq, dec = Dim("batch"), Dim("sequence"), Dim("decoded")
    ids = torch.full((2, 5), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    written = []
    for name, module in _wrappers(model, architecture).items():
        if name == "decoder" and architecture == "encoder-decoder":
            hidden = torch.zeros(2, 5, model.config.d_model)
            args = (torch.zeros(2, 3, dtype=torch.long), hidden, mask)
            names = ["decoder_input_ids", "encoder_hidden_states", "attention_mask"]
            shapes = ({0: batch, 1: dec}, {0: batch, 1: seq}, {0: batch, 1: seq})
        else:
            args, names, shapes = (ids, mask), ["input_ids", "attention_mask"], ({0: batch, 1: seq}, {0: batch, 1: seq})
        path = out_dir / f"{name}.onnx"
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=shapes,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        program.save(str(path))
        written.append(path)
    return written


def quantize_int8(paths: list[Path]) -> list[Path]:
    """Dynamic int8 quantization of each graph, in place; returns the paths."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for path in paths:
        tmp = path.with_name(path.stem + ".int8.onnx")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
        for old in [path, *path.parent.glob(path.name + ".data")]:
            old.unlink()
        tmp.rename(path)
    return paths


class OnnxStudent:
    """An ONNX export answered by ONNX Runtime, greedy, one input at a time (sessions are thread-safe)."""

    def __init__(
        self, export_dir: Path, architecture: str, instruction: str, max_tokens: int, threads: int | None = None
    ):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.sessions = {
            name: ort.InferenceSession(
                str(Path(export_dir) / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
            )
            for name in GRAPHS[architecture]
        }
        self.tokenizer = AutoTokenizer.from_pretrained(export_dir)
        self.architecture, self.instruction, self.max_tokens = architecture, instruction, max_tokens
        if architecture == CLASSIFIER:  # no decoding: labels, temperature and token cap instead
            self.classes = json.loads((Path(export_dir) / "classifier.json").read_text(encoding="utf-8"))
            return
        info = json.loads((Path(export_dir) / "generation.json").read_text(encoding="utf-8"))
        self.eos, self.decoder_start = set(info["eos_token_ids"]), info.get("decoder_start_token_id")

    def predict(self, text: str) -> Answer:
        import numpy as np

        if self.architecture == CLASSIFIER:
            return self.classify(text)
        ids = prompt_ids(self.tokenizer, self.instruction, text)
        prompt = np.array([ids], dtype=np.int64)
        mask = np.ones_like(prompt)
        if self.architecture == "encoder-decoder":
            hidden = self.sessions["encoder"].run(None, {"input_ids": prompt, "attention_mask": mask})[0]
            sequence = [self.decoder_start]
        else:
            sequence = list(ids)
        new: list[int] = []
        for _ in range(self.max_tokens):
            if self.architecture == "encoder-decoder":
                logits = self.sessions["decoder"].run(
                    None,
                    {
                        "decoder_input_ids": np.array([sequence], dtype=np.int64),
                        "encoder_hidden_states": hidden,
                        "attention_mask": mask,
                    },
                )[0]
            else:
                seq = np.array([sequence], dtype=np.int64)
                logits = self.sessions["model"].run(None, {"input_ids": seq, "attention_mask": np.ones_like(seq)})[0]
            token = int(logits[0].argmax())
            if token in self.eos:
                break
            sequence.append(token)
            new.append(token)
        return Answer(clean_output(self.tokenizer.decode(new, skip_special_tokens=True)), len(ids), len(new) + 1)

    def classify(self, text: str) -> Answer:
        """An encoder-classifier's answer: the top label of softmax(logits / T), with every label's probability."""
        import numpy as np

        ids = np.array([encode_input(self.tokenizer, text, self.classes["max_length"])], dtype=np.int64)
        logits = self.sessions["model"].run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        probs = probabilities_from_logits(logits, self.classes["temperature"])
        label, probabilities = answers_from_probabilities(probs, self.classes["labels"])[0]
        return Answer(label, int(ids.shape[1]), 1, probabilities)

    def close(self) -> None:
        self.sessions = {}


def generation_info(model_dir: Path, tokenizer) -> dict:
    """What greedy decoding needs besides the graphs: the ids that end it and the decoder's first id."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return {
        "eos_token_ids": eos_ids(model_dir, tokenizer),
        "decoder_start_token_id": config.get("decoder_start_token_id"),
    }
