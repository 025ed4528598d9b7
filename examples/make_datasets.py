"""Make the example datasets and test sets (deterministic; run from anywhere).

The quick start's task, dates written every which way -> ISO 8601, has a truth computed by code
(`dates_to_iso_test.jsonl`): the student the teacher's data trained, and the teacher itself, are
scored on dates no one chose by hand. The dataset folders under examples/datasets/ give retrieval
a real choice to make: numbers in words -> digits (with its own test set), a gated copy of it
(must be skipped), and unrelated tasks.

    python examples/make_datasets.py
"""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000, e.g. 342 -> 'three hundred forty-two'."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    return number_to_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_to_words(n % 1000))


def sample_numbers(rng: random.Random, k: int) -> list[int]:
    """Mostly below 1000 (short, learnable fast), some thousands."""
    return [rng.randrange(1000) if rng.random() < 0.7 else rng.randrange(1000, 100_000) for _ in range(k)]


MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def ordinal(day: int) -> str:
    return f"{day}{'th' if 11 <= day % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


# Ways people write a date; the quick start's test set mixes them all.
DATE_FORMS = [
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {ordinal(d.day)}, {d.year}",
    lambda d: f"{d.day}. {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1].lower()} {d.day} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3].lower()} {ordinal(d.day)} {d.year}",
]


def date_examples(rng: random.Random, k: int) -> list[dict]:
    """`k` dates between 1700 and 2099, each written one of DATE_FORMS ways, with their ISO 8601 form."""
    rows = []
    for _ in range(k):
        d = datetime.date(1700, 1, 1) + datetime.timedelta(days=rng.randrange(146_000))
        rows.append({"input": rng.choice(DATE_FORMS)(d), "output": d.isoformat()})
    return rows


def write_folder(root: Path, name: str, card: str, rows: list[dict]) -> None:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(card.strip() + "\n", encoding="utf-8")
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main(root: Path = Path(__file__).parent / "datasets") -> None:
    rng = random.Random(2308)
    nums = sample_numbers(rng, 600)
    write_folder(
        root,
        "number_words",
        """
---
pretty_name: Number words to digits
license: cc0-1.0
task_categories: [text2text-generation]
tags: [numbers, number words, digits, numerals, conversion, english]
downloads: 1200
---
English numbers written in words (for example "three hundred forty-two") paired with their value in digits ("342").
Columns: `words` (the number in words), `digits` (the number in digits).
""",
        [{"words": number_to_words(n), "digits": str(n)} for n in nums],
    )
    write_folder(
        root,
        "number_words_gated",
        """
---
pretty_name: Number words to digits (full)
license: other
gated: true
tags: [numbers, number words, digits, conversion]
downloads: 300
---
A larger copy of number words paired with digits; access needs the owner's approval.
""",
        [{"words": number_to_words(n), "digits": str(n)} for n in sample_numbers(rng, 50)],
    )
    temps = [rng.randrange(-40, 120) for _ in range(300)]
    write_folder(
        root,
        "celsius_to_fahrenheit",
        """
---
pretty_name: Celsius to Fahrenheit
license: cc0-1.0
tags: [temperature, unit conversion, weather]
downloads: 500
---
Temperatures in degrees Celsius with the same temperature in Fahrenheit, rounded to whole degrees.
""",
        [{"input": f"{c} °C", "output": f"{round(c * 9 / 5 + 32)} °F"} for c in temps],
    )
    good = ["a delight", "wonderful", "moving and funny", "the best film this year", "beautifully shot"]
    bad = ["a mess", "boring", "far too long", "the worst film this year", "badly acted"]
    reviews = [{"text": f"The movie was {rng.choice(good)}.", "label": "positive"} for _ in range(150)]
    reviews += [{"text": f"The movie was {rng.choice(bad)}.", "label": "negative"} for _ in range(150)]
    write_folder(
        root,
        "movie_review_sentiment",
        """
---
pretty_name: Movie review sentiment
license: cc0-1.0
task_categories: [text-classification]
tags: [sentiment, reviews, movies, classification]
downloads: 5000
---
Short movie reviews labelled positive or negative.
""",
        reviews,
    )
    test = sorted(set(sample_numbers(random.Random(99), 150)) - set(nums))[:100]
    with open(Path(__file__).parent / "numbers_to_digits_test.jsonl", "w", encoding="utf-8") as f:
        for n in test:
            f.write(json.dumps({"input": number_to_words(n), "output": str(n)}) + "\n")
    with open(Path(__file__).parent / "dates_to_iso_test.jsonl", "w", encoding="utf-8") as f:
        for row in date_examples(random.Random(1970), 100):
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
