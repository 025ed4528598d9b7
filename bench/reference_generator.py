"""prompt2model 0.1.0's generator, driven against an OpenAI-compatible URL (run in its own venv).

Called by bench/generation_rate.py as
    bench/.ref-venv/bin/python bench/reference_generator.py --base-url URL --rpm R --examples N --max-api-calls K
and prints one JSON line: accepted examples, wall seconds, and how it ended (finished / crashed).

Only the generator is exercised. Its package imports its retriever's dependencies (torch,
tevatron) through `prompt2model.utils`, and counts tokens with tiktoken, which downloads its
encoding at first use: those three are stubbed here, nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types


def install_stubs() -> None:
    class Encoding:  # whitespace tokens: only used to size max_tokens
        def __init__(self, *args, **kwargs):
            pass

        def encode(self, text, *args, **kwargs):
            return text.split()

    tiktoken = types.ModuleType("tiktoken")
    tiktoken.Encoding = Encoding
    tiktoken.get_encoding = tiktoken.encoding_for_model = lambda name: Encoding()
    sys.modules["tiktoken"] = tiktoken
    tevatron_utils = types.ModuleType("prompt2model.utils.tevatron_utils")
    tevatron_utils.encode_text = tevatron_utils.retrieve_objects = None
    sys.modules["prompt2model.utils.tevatron_utils"] = tevatron_utils


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--rpm", type=int, required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--max-api-calls", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    install_stubs()
    from prompt2model.dataset_generator.prompt_based import PromptBasedDatasetGenerator
    from prompt2model.utils import api_tools

    api_tools.default_api_agent = api_tools.APIAgent(
        model_name="openai/fake-teacher", api_base=args.base_url, max_tokens=4000
    )
    spec = types.SimpleNamespace(
        instruction="Convert the number written in English words to digits.",
        examples='input="three hundred forty-two"\noutput="342"\n\ninput="seventeen"\noutput="17"',
    )
    generator = PromptBasedDatasetGenerator(
        max_api_calls=args.max_api_calls,
        requests_per_minute=args.rpm,
        max_batch_size=args.batch_size,
        responses_per_request=1,
    )
    started = time.monotonic()
    try:
        dataset = generator.generate_dataset_split(spec, args.examples)
        outcome, accepted = "finished", len(dataset)
    except Exception as e:  # what the reference does on a persistent 429, for example
        outcome, accepted = f"crashed: {e.__class__.__name__}: {str(e)[:80]}", 0
    print(json.dumps({"accepted": accepted, "wall_s": round(time.monotonic() - started, 1), "outcome": outcome}))


if __name__ == "__main__":
    main()
