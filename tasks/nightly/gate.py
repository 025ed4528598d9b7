"""The promotion gate: is a new model better than the serving one on the same test examples?

Input: per-example exact match (1 right, 0 wrong) of both models on one fixed test set, in the
same order. The difference of their means is bootstrapped by resampling examples in pairs (each
resample draws the same examples for both models, so what the two have in common cancels out);
the new model is promoted only when the lower bound of the interval is above zero. With nothing
new learned the interval straddles zero, or is [0, 0] for identical answers: the serving model
stays (no promotion by noise).

The resampling is `scipy.stats.bootstrap` with `paired=True` and percentile intervals: a
well-kept implementation, and percentile intervals stay defined when every resample gives the same
difference (BCa does not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GateDecision:
    promote: bool
    difference: float  # new minus serving, exact match in points (0-100)
    low: float  # bounds of the interval of the difference, in points
    high: float
    serving_exact_match: float
    new_exact_match: float
    n: int
    resamples: int
    confidence: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    serving: list[int], new: list[int], resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> GateDecision:
    """Decide on promotion from per-example scores (same examples, same order); see the module docstring."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(serving) != len(new):
        raise ValueError(f"the two models were scored on different examples ({len(serving)} and {len(new)})")
    if not serving:
        raise ValueError("no test examples to compare the models on")
    a, b = np.asarray(serving, dtype=float), np.asarray(new, dtype=float)
    diff = float((b - a).mean() * 100)
    if np.array_equal(a, b):
        low = high = 0.0  # every resample gives 0: nothing to resample
    else:
        result = bootstrap(
            (a, b),
            lambda x, y, axis=-1: (y - x).mean(axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low * 100), float(result.confidence_interval.high * 100)
    promote = low > 0
    interval = f"{confidence:.0%} interval [{low:+.1f}, {high:+.1f}] points"
    if promote:
        reason = f"new model better by {diff:+.1f} points of exact match ({interval}, above zero)"
    elif diff > 0:
        reason = f"new model ahead by {diff:+.1f} points, but the {interval} includes zero: could be noise"
    elif diff == 0:
        reason = f"no difference in exact match ({interval})"
    else:
        reason = f"new model worse by {diff:.1f} points ({interval})"
    return GateDecision(
        promote,
        round(diff, 2),
        round(low, 2),
        round(high, 2),
        round(float(a.mean() * 100), 2),
        round(float(b.mean() * 100), 2),
        len(a),
        resamples,
        confidence,
        reason,
    )
