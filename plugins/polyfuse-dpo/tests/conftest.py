"""Fixtures: the RL test tasks of polyfuse.rl.testing, and preference pairs over the text bandit; one torch thread."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from polyfuse.datasets import PreferencePairs
from polyfuse.observations import ObservationColumns
from polyfuse.rl.testing import WordBandit, helpers, make_network, make_pipeline  # noqa: F401 (pytest fixtures)
from polyfuse.training import Pipeline

torch.set_num_threads(1)


def bandit_pairs(pairs: int = 48, num_words: int = 4, action_start: int = 0, seed: int = 0) -> PreferencePairs:
    """Pairs over :class:`WordBandit` observations: the action the text names is preferred to another one."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(num_words, size=pairs)
    rejected = (targets + rng.integers(1, num_words, size=pairs)) % num_words
    observations = {
        "vector": rng.uniform(-1, 1, (pairs, 4)).astype(np.float32),
        "text": [f"go {WordBandit.WORDS[t]}" for t in targets],
    }
    env = WordBandit(num_words, action_start)
    return PreferencePairs(ObservationColumns(observations), np.arange(pairs), targets + action_start,
                           rejected + action_start, env.observation_space, env.action_space)


def bandit_observations(count: int, num_words: int = 4, seed: int = 1) -> tuple[dict[str, Any], np.ndarray]:
    """Fresh bandit observations and the index of the action each one names."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(num_words, size=count)
    text = tuple(f"go {WordBandit.WORDS[t]}" for t in targets)
    return {"vector": rng.uniform(-1, 1, (count, 4)).astype(np.float32), "text": text}, targets


def pairs_pipeline(
    dataset: Any = None, seed: int = 0, frozen_text: bool = False, action_space: Any = None, **pair_kwargs: Any
) -> Pipeline:
    """A dataset-only pipeline (no env) over :func:`bandit_pairs` (or ``dataset``) with the test networks."""
    if dataset is None:
        dataset = bandit_pairs(**pair_kwargs)
    space = gymnasium.spaces.Dict({"vector": gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32),
                                   "text": gymnasium.spaces.Text(32)})
    return Pipeline(lambda: make_network(space, frozen_text), seed, space,
                    action_space if action_space is not None else dataset.action_space, dataset=dataset)


@pytest.fixture
def make_pairs_pipeline() -> Callable[..., Pipeline]:
    """``make_pairs_pipeline(dataset=None, seed=0, frozen_text=False, action_space=None, pairs=48, num_words=4, ...)``."""
    return pairs_pipeline


@pytest.fixture
def pairs_helpers() -> Any:
    """This module: :func:`bandit_pairs`, :func:`bandit_observations`, :func:`pairs_pipeline`."""
    return sys.modules[__name__]
