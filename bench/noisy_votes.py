"""How right the accepted examples are, and what they cost, against a teacher that is often wrong.

A scripted teacher for the dates-to-ISO prompt, behind the OpenAI protocol, with no
log-probabilities: every output it writes or answers is wrong with probability `--noise` (0.2),
and its wrong answers are alike (the right date one day or thirty days off, the same slip for the
same input half of the time), as a real teacher's systematic mistakes are. Generation runs until
`--examples` examples are accepted, once with fixed votes (the written answer plus two, the
majority wins: p2m's rule before adaptive votes) and once with adaptive votes. The table gives
the share of accepted examples whose output is the right date, and the teacher's answers per
accepted example (every choice of every request counted: a generation request is one, a vote
request with n choices is n).

    python bench/noisy_votes.py [--examples 200] [--noise 0.2] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.peak_rss import MemoryWatch  # noqa: E402
from tests.fake_llm_server import FakeLLMServer, request_kind  # noqa: E402

MONTHS = [dt.date(2000, m, 1).strftime("%B") for m in range(1, 13)]


def iso(day: dt.date) -> str:
    return day.isoformat()


def written_form(day: dt.date, rng: random.Random) -> str:
    """A date as a person might write it (the task's input)."""
    forms = [
        f"{MONTHS[day.month - 1]} {day.day}, {day.year}",
        f"{day.day} {MONTHS[day.month - 1]} {day.year}",
        f"{day.month}/{day.day}/{day.year}",
        f"{MONTHS[day.month - 1][:3]} {day.day} {day.year}",
    ]
    return rng.choice(forms)


class NoisyDates:
    """The scripted teacher: right with probability 1 - noise; wrong answers alike."""

    def __init__(self, noise: float, seed: int):
        self.noise, self.rng, self.truth, self.choices = noise, random.Random(seed), {}, 0

    def answer(self, text: str) -> str:
        day = self.truth.get(text)
        if day is None:
            return "unknown"
        if self.rng.random() >= self.noise:
            return iso(day)
        # The same slip for the same input half of the time: systematic mistakes, not noise alone.
        slip_rng = random.Random(text) if self.rng.random() < 0.5 else self.rng
        return iso(day + dt.timedelta(days=slip_rng.choice([1, -1, 30, -30])))

    def __call__(self, messages: list[dict], request: dict) -> str:
        self.choices += 1
        kind, value = request_kind(messages)
        if kind == "generate":
            examples = []
            for _ in range(value):
                day = dt.date(1900, 1, 1) + dt.timedelta(days=self.rng.randrange(80_000))
                text = written_form(day, self.rng)
                self.truth[text] = day
                examples.append({"input": text, "output": self.answer(text)})
            return json.dumps({"examples": examples})
        if kind == "aspects":
            return json.dumps({"aspects": ["month names or numbers", "century", "separators"][:value]})
        return self.answer(str(value))


async def generate(server: FakeLLMServer, teacher: NoisyDates, examples: int, adaptive: bool, cache: Path) -> dict:
    from p2m.tasks.core.config import GenerationConfig, LimitsConfig
    from p2m.tasks.stages.generate import generate_examples
    from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
    from p2m.tasks.teacher.client import Endpoint, LLMClient

    spec = parse_prompt(read_prompt_file(REPO / "examples" / "dates_to_iso.txt"))
    llm = LLMClient(
        Endpoint(server.base_url, "k", server.model),
        LimitsConfig(requests_per_minute=1e6, tokens_per_minute=1e9, request_timeout=10),
        cache,
    )
    cfg = GenerationConfig(num_examples=examples, batch_size=8, votes=3, adaptive_votes=adaptive)
    started = time.monotonic()
    report = await generate_examples(llm, spec, cfg)
    right = sum(iso(teacher.truth[e["input"]]) == e["output"] for e in report.examples if e["input"] in teacher.truth)
    accepted = len(report.examples)
    return {
        "votes": "adaptive" if adaptive else "fixed (written + 2)",
        "accepted": accepted,
        "right": round(right / accepted, 4) if accepted else None,
        "answers_per_example": round(teacher.choices / accepted, 2) if accepted else None,
        "rejected": dict(report.rejected),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for adaptive in (False, True):
            teacher = NoisyDates(args.noise, seed)
            server = FakeLLMServer(teacher, model=f"noisy-{seed}-{adaptive}")
            with tempfile.TemporaryDirectory() as tmp, server, MemoryWatch([os.getpid()]) as watch:
                row = asyncio.run(generate(server, teacher, args.examples, adaptive, Path(tmp) / "cache.sqlite"))
            rows.append({"seed": seed, **row, "peak_mb": round(watch.peak_sum / 1e6)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| seed | votes | accepted | right | answers per example | rejected | seconds | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['votes']} | {r['accepted']} | {r['right']:.1%} | {r['answers_per_example']} | "
            f"{r['rejected']} | {r['seconds']} | {r['peak_mb']} |"
        )


if __name__ == "__main__":
    main()
