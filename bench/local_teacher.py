"""Benchmark: the local teacher, llama.cpp's server against the transformers server it replaced.

The same generation prompts (the quick start's dates task, five examples asked per request,
temperature 0.8, fixed seeds) go to:
- SmolLM2-135M through transformers `generate`, one request at a time: what p2m's hand-written
  FastAPI + transformers teacher did (the only model it could serve at a usable speed);
- SmolLM2-135M through llama.cpp (xllamacpp), 1 slot and 4 slots: the same model, the new server;
- Qwen2.5-Coder-1.5B-Instruct (the default teacher) through llama.cpp, 1 slot and 4 slots.
Reported per row: completion tokens per second, usable examples per minute (replies parsed into
input/output pairs, duplicates dropped), the share of requests that gave any usable example,
wall time, and the server's peak RSS (the in-process row: this process's).

    python bench/local_teacher.py                 # about 15 minutes on 2 cores
    python bench/local_teacher.py --requests 4    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2m.tasks.core.config import DEFAULT_HOME, GenerationConfig  # noqa: E402
from p2m.tasks.stages.generate import example_prompt, parse_examples  # noqa: E402
from p2m.tasks.stages.parse import parse_by_rules, read_prompt_file  # noqa: E402
from p2m.tasks.teacher.local import running_local_teacher  # noqa: E402
from p2m.tasks.teacher.prompts import examples_schema  # noqa: E402

from bench.peak_rss import MemoryWatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CFG = GenerationConfig()


def prompts(n: int) -> list[list[dict]]:
    """`n` generation prompts for the dates example, as the generator builds them (varying what was written)."""
    spec = parse_by_rules(read_prompt_file(ROOT / "examples" / "dates_to_iso.txt").text)
    rng = random.Random(0)
    written = [{"input": f"{rng.randrange(1, 28)} May {rng.randrange(1700, 2100)}", "output": "x"} for _ in range(12)]
    return [
        example_prompt(
            spec, CFG, written[: i % 12], ["written-out month (March)", "year range (1712)"], random.Random(i)
        )
        for i in range(n)
    ]


def usable(replies: list[str]) -> tuple[int, float]:
    """(distinct usable examples, share of replies with at least one)."""
    seen, good = set(), 0
    for reply in replies:
        examples, _ = parse_examples(reply)
        good += bool(examples)
        seen.update((e["input"], e["output"]) for e in examples)
    return len(seen), good / max(1, len(replies))


def transformers_row(messages: list[list[dict]], max_tokens: int) -> dict:
    """SmolLM2 through transformers, one request at a time (the replaced server's way)."""
    import torch
    from p2m.tasks.storage.embedded import smollm2_path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path(DEFAULT_HOME)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    replies, tokens = [], 0
    started = time.perf_counter()
    for i, m in enumerate(messages):
        ids = tokenizer.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        torch.manual_seed(i)
        with torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=max_tokens,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                pad_token_id=tokenizer.eos_token_id,
            )
        new = out[0][ids["input_ids"].shape[1] :]
        tokens += len(new)
        replies.append(tokenizer.decode(new, skip_special_tokens=True))
    seconds = time.perf_counter() - started
    return {
        "tokens": tokens,
        "seconds": seconds,
        "replies": replies,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }


def llama_row(model: str, slots: int, messages: list[list[dict]], max_tokens: int) -> dict:
    """A model through p2m's local teacher (llama.cpp), `slots` requests in flight."""
    import openai

    with tempfile.TemporaryDirectory() as home, running_local_teacher(Path(home), model, slots=slots) as teacher:
        server = next(p for p in psutil.Process().children(recursive=True) if "local_teacher" in " ".join(p.cmdline()))
        schema = examples_schema(CFG.examples_per_request)

        async def measure() -> tuple[list, float, float]:
            # One event loop for the client's whole life: its connections belong to the loop.
            client = openai.AsyncOpenAI(base_url=teacher.base_url, api_key=teacher.api_key, max_retries=0, timeout=1800)
            semaphore = asyncio.Semaphore(slots)

            async def ask(i, m):
                async with semaphore:
                    return await client.chat.completions.create(
                        model=teacher.model,
                        messages=m,
                        temperature=0.8,
                        max_tokens=max_tokens,
                        seed=i,
                        response_format=schema,
                    )

            await ask(-1, messages[0])  # warm-up: loading and the first prompt are not measured
            with MemoryWatch([server.pid]) as rss:
                started = time.perf_counter()
                responses = await asyncio.gather(*[ask(i, m) for i, m in enumerate(messages)])
                seconds = time.perf_counter() - started
            await client.close()
            return responses, seconds, rss.peak_sum / 1e6

        responses, seconds, peak = asyncio.run(measure())
    return {
        "tokens": sum(r.usage.completion_tokens for r in responses),
        "seconds": seconds,
        "replies": [r.choices[0].message.content or "" for r in responses],
        "peak_rss_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    messages = prompts(args.requests)
    max_tokens = CFG.max_tokens * CFG.examples_per_request + 32
    rows = [("transformers server (before)", "smollm2-135m-instruct", 1, transformers_row(messages, max_tokens))]
    for model in ("smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct"):
        for slots in (1, 4):
            rows.append(("llama.cpp (xllamacpp)", model, slots, llama_row(model, slots, messages, max_tokens)))
    base = rows[0][3]["tokens"] / rows[0][3]["seconds"]
    print(f"\n{args.requests} generation requests (dates task, {CFG.examples_per_request} examples each), 2 cores\n")
    print(
        "| server | model | slots | tokens/s | ratio | usable examples/min | requests with a usable example "
        "| seconds | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for server, model, slots, r in rows:
        examples, share = usable(r["replies"])
        rate = r["tokens"] / r["seconds"]
        print(
            f"| {server} | {model} | {slots} | {rate:.1f} | {rate / base:.2f} "
            f"| {examples / r['seconds'] * 60:.1f} | {share:.0%} "
            f"| {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
