"""How many queries to ask at each reward-model update: a share up front, the rest spread by a schedule.

As in the preference-learning literature (Christiano et al. 2017; imitation's
``query_schedule``): the first update asks ``initial_share`` of the budget so
the reward model has something to learn from, and the rest is spread over the
updates that follow, evenly (``constant``) or front-loaded (``hyperbolic``:
weight ``1 / (1 + t)``; ``inverse-quadratic``: ``1 / (1 + t)^2``, ``t`` from 0
to 1 across them), ending at ``query_until`` of the run.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("constant", "hyperbolic", "inverse-quadratic")


def query_counts(budget: int, updates: int, initial_share: float, shape: str, query_until: float = 1.0) -> list[int]:
    """Queries per update (``updates`` entries summing to ``budget``, or fewer when updates run out)."""
    if updates <= 0 or budget <= 0:
        return [0] * max(updates, 0)
    initial = round(budget * initial_share) if updates > 1 else budget
    rest = budget - initial
    spread = max(1, min(updates - 1, math.ceil(updates * query_until) - 1))  # updates after the first one
    t = np.linspace(0.0, 1.0, spread)
    weights = {"constant": np.ones_like(t), "hyperbolic": 1.0 / (1.0 + t),
               "inverse-quadratic": 1.0 / (1.0 + t) ** 2}[shape]
    cumulative = np.round(np.cumsum(weights) / weights.sum() * rest).astype(int)
    shares = np.diff(np.concatenate([[0], cumulative])).tolist()
    counts = [initial, *shares] if updates > 1 else [initial]
    return counts + [0] * (updates - len(counts))
