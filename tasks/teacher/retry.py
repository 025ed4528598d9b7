"""How long to wait before asking a teacher again: what the server asks for, else backoff with jitter.

Below the client and the replicas, which both read it.
"""

from __future__ import annotations

import random

import httpx


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """Seconds the server asks us to wait (`retry-after-ms`, then `retry-after`), if it says."""
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter: half the step fixed, half random (never near zero)."""
    step = min(cap, base * 2**attempt)
    return step / 2 + random.uniform(0, step / 2)
