"""Confidence intervals and robust aggregates for evaluation results.

- Success rates: the Wilson score interval (Wilson 1927), which stays inside
  [0, 1] and keeps its coverage at 0/n and n/n, where the normal
  approximation collapses to a zero-width interval.
- Mean returns (and aggregates over a suite of environments): the percentile
  bootstrap, resampling episodes within each environment (stratified, as
  rliable does), from a fixed seed so the same episodes give the same interval.
- The interquartile mean (IQM): rliable's robust aggregate, the mean of the
  middle 50% (``scipy.stats.trim_mean(x, 0.25)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a success rate ``successes / trials``."""
    if trials <= 0:
        raise ValueError(f"a success rate needs at least one trial, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    z = _z(confidence)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denominator
    half_width = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)) / denominator
    # The exact bounds at 0/n and n/n are 0 and 1; rounding must not leave them a hair off.
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == trials else min(1.0, centre + half_width)
    return low, high


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean after cutting ``int(0.25 * n)`` values from each end (rliable's IQM)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if ordered.size == 0:
        raise ValueError("the interquartile mean of no values is undefined")
    cut = int(0.25 * ordered.size)
    return float(ordered[cut:ordered.size - cut].mean())


def bootstrap_interval(
    groups: Sequence[Sequence[float] | np.ndarray],
    aggregate: Callable[[np.ndarray], float] = np.mean,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``aggregate`` over the groups' means.

    Each resample draws every group's values with replacement (within the
    group), takes each group's mean, and applies ``aggregate`` to those
    means; with one group and the default ``np.mean`` this is the plain
    percentile bootstrap of a mean. Deterministic for a given ``seed``.
    """
    arrays = [np.asarray(group, dtype=np.float64).ravel() for group in groups]
    if not arrays or any(array.size == 0 for array in arrays):
        raise ValueError("bootstrap_interval needs at least one group, each with at least one value")
    _z(confidence)  # checks the level
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(arrays)))
    for column, array in enumerate(arrays):
        rows = rng.integers(0, array.size, size=(resamples, array.size))
        means[:, column] = array[rows].mean(axis=1)
    statistics = means.mean(axis=1) if aggregate is np.mean else np.apply_along_axis(aggregate, 1, means)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistics, [tail, 1.0 - tail])
    return float(low), float(high)
