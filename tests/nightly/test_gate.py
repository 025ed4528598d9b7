"""The promotion gate on scripted per-example scores: promote, keep, tie."""

import pytest
from p2m.tasks.nightly.gate import paired_bootstrap


def test_a_clearly_better_model_is_promoted():
    serving = [1] * 60 + [0] * 40  # 60%
    new = [1] * 60 + [1] * 30 + [0] * 10  # 90%: fixes 30 examples, breaks none
    d = paired_bootstrap(serving, new, resamples=1000, seed=0)
    assert d.promote and d.difference == 30.0 and d.low > 15 and d.high <= 45
    assert (d.serving_exact_match, d.new_exact_match, d.n, d.resamples) == (60.0, 90.0, 100, 1000)
    assert "better by +30.0 points" in d.reason


def test_a_small_gain_within_noise_keeps_the_serving_model():
    serving = [1] * 50 + [0] * 50
    new = list(serving)
    new[50:53] = [1, 1, 1]  # fixes 3 ...
    new[0:2] = [0, 0]  # ... breaks 2: +1 point on 100 examples
    d = paired_bootstrap(serving, new, resamples=1000, seed=0)
    assert not d.promote and d.difference == 1.0 and d.low < 0 < d.high
    assert "includes zero" in d.reason


def test_a_worse_model_is_kept_out():
    d = paired_bootstrap([1] * 80 + [0] * 20, [1] * 50 + [0] * 50, resamples=1000)
    assert not d.promote and d.difference == -30.0 and d.high < 0 and "worse" in d.reason


def test_a_tie_never_promotes():
    same = [1, 0, 1, 1, 0] * 20
    d = paired_bootstrap(same, list(same), resamples=1000)
    assert not d.promote and (d.difference, d.low, d.high) == (0.0, 0.0, 0.0) and "no difference" in d.reason
    # Equal totals from different examples (5 fixed, 5 broken): no promotion either.
    other = list(same)
    fixed = [i for i, x in enumerate(same) if x == 0][:5]
    broken = [i for i, x in enumerate(same) if x == 1][:5]
    for i in fixed:
        other[i] = 1
    for i in broken:
        other[i] = 0
    d = paired_bootstrap(same, other, resamples=1000)
    assert sum(other) == sum(same) and not d.promote and d.difference == 0.0 and d.low < 0 < d.high


def test_the_decision_is_reproducible_and_inputs_are_checked():
    serving, new = [1, 0] * 30, [1, 1] * 20 + [1, 0] * 10
    assert paired_bootstrap(serving, new, seed=3) == paired_bootstrap(serving, new, seed=3)
    with pytest.raises(ValueError, match="different examples"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="no test examples"):
        paired_bootstrap([], [])
