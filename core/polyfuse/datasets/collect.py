"""Synthetic preference pairs from an environment's expert, the feedback an oracle annotator gives.

In each state the expert visits, its action is preferred to another action
drawn uniformly from the rest: the pairs DPO learns from when no people or
AI judges are at hand (imitation's synthetic gatherer compares whole
trajectories by return; here single actions are compared, which suits
discrete-action policies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium import spaces

from polyfuse.config import EnvConfig
from polyfuse.errors import PolyfuseError


def collect_expert_preferences(env: EnvConfig, pairs: int, seed: int, folder: str | Path) -> Path:
    """Follow the expert until ``pairs`` states are labelled; write one pair per state to ``folder``."""
    from polyfuse.datasets.preferences import write_preferences
    from polyfuse.envs import make_env
    from polyfuse.observations import take
    from polyfuse.training.warm_start import collect_demonstrations

    probe = make_env(env.id, env.kwargs)
    observation_space, action_space = probe.observation_space, probe.action_space
    probe.close()
    if not isinstance(action_space, spaces.Discrete) or action_space.n < 2:
        raise PolyfuseError(f"{env.id}: preference pairs over actions need a Discrete space of 2+ actions, "
                            f"not {action_space}")
    demonstrations = collect_demonstrations(env, pairs, seed, max_samples=pairs)
    batch, labels = demonstrations.batch, demonstrations.labels
    rows = np.arange(pairs)
    chosen = labels[rows]
    rng = np.random.default_rng(seed)
    offset = rng.integers(1, action_space.n, size=pairs)  # any action but the expert's, uniformly
    start = int(action_space.start)
    rejected = start + (chosen - start + offset) % action_space.n
    return write_preferences(folder, take(batch, rows), chosen, rejected, observation_space, action_space,
                             extras=[{"annotator": "expert"}] * pairs)
