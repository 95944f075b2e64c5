"""Confidence intervals and the interquartile mean against published and independently computed values."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.training.intervals import bootstrap_interval, iqm, wilson_interval


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # by hand: 0/10 -> upper bound z^2 / (n + z^2) = 3.8415 / 13.8415; n/n mirrors 0/n; 5/10 symmetric about 1/2
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_matches_published_values(successes: int, trials: int, low: float, high: float) -> None:
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)


def test_wilson_is_exact_at_the_edges_and_agrees_with_scipy() -> None:
    assert wilson_interval(0, 200)[0] == 0.0 and wilson_interval(200, 200)[1] == 1.0
    assert 0.0 < wilson_interval(0, 200)[1] < 0.02 and 0.98 < wilson_interval(200, 200)[0] < 1.0
    stats = pytest.importorskip("scipy.stats")
    for successes, trials in [(3, 7), (50, 64), (199, 200), (1, 1)]:
        expected = stats.binomtest(successes, trials).proportion_ci(confidence_level=0.9, method="wilson")
        assert wilson_interval(successes, trials, 0.9) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_refuses_impossible_counts() -> None:
    for successes, trials in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson_interval(successes, trials)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


def test_iqm_is_rliables_trimmed_mean() -> None:
    assert iqm([1, 2, 3, 4]) == 2.5  # the middle two
    assert iqm([5, 1, 9, 2, 7]) == pytest.approx((2 + 5 + 7) / 3)
    assert iqm([3.0]) == 3.0 and iqm([1, 100, 2]) == pytest.approx(103 / 3)  # fewer than 4: nothing cut
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(0).normal(size=37)
    assert iqm(values) == pytest.approx(stats.trim_mean(values, 0.25))
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_is_seeded_and_matches_scipys_percentile_bootstrap() -> None:
    values = np.random.default_rng(1).exponential(size=200)
    interval = bootstrap_interval([values])
    assert interval == bootstrap_interval([values]), "same values, same seed: same interval"
    assert interval != bootstrap_interval([values], seed=1)
    low, high = interval
    assert low < values.mean() < high
    stats = pytest.importorskip("scipy.stats")
    reference = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=10_000, random_state=0)
    # different random draws: equal up to Monte-Carlo error (about 1% of the width at 10,000 resamples)
    width = high - low
    assert low == pytest.approx(reference.confidence_interval.low, abs=0.03 * width)
    assert high == pytest.approx(reference.confidence_interval.high, abs=0.03 * width)
    # and the normal approximation mean +- 1.96 s / sqrt(n), which a mean of 200 follows closely
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), abs=0.1 * width)


def test_bootstrap_of_constant_values_has_no_width_and_groups_are_stratified() -> None:
    assert bootstrap_interval([[2.0] * 30]) == (2.0, 2.0)
    # each group resampled within itself: groups without spread leave the mean of their means fixed
    assert bootstrap_interval([[0.0] * 5, [1.0] * 50]) == (0.5, 0.5)
    # an aggregate over groups: the IQM of four groups' means is the mean of the middle two
    groups = [[0.0] * 10, [1.0] * 10, [2.0] * 10, [100.0] * 10]
    assert bootstrap_interval(groups, iqm) == (1.5, 1.5)
    with pytest.raises(ValueError):
        bootstrap_interval([[]])
