"""Reward sources: where the reward an RL optimizer maximises comes from.

The trainer applies the configured reward source to every vector-env step,
so optimizers never know whether rewards come from the environment, a
learned reward model, people or AI judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TransitionBatch:
    """One vector-env step: ``observations`` are those the actions were taken in.

    ``next_observations`` are the observations after the step; for an
    environment whose episode just ended they are the final observations,
    not the reset ones.
    """

    observations: Mapping[str, Any]
    actions: np.ndarray
    env_rewards: np.ndarray
    next_observations: Mapping[str, Any]
    terminated: np.ndarray
    truncated: np.ndarray
    infos: Mapping[str, Any]


class RewardSource:
    """Turns a batch of transitions into one float reward per environment."""

    def __call__(self, batch: TransitionBatch) -> np.ndarray:  # noqa: D102 - documented on the class
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (a learned reward model's weights, feedback counters)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class EnvReward(RewardSource):
    """The environment's own reward, optionally scaled (useful when returns are large)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, batch: TransitionBatch) -> np.ndarray:
        return np.asarray(batch.env_rewards, dtype=np.float32) * self.scale
