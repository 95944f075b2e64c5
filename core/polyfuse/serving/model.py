"""A trained run's policy as a function of a batch: greedy actions and the policy's action probabilities.

Loaded through :func:`polyfuse.training.saved_policy.load_saved_policy` (no pickle), every module the
optimizer holds in eval mode (serving never trains, and a layer such as batch norm must not read
statistics from whoever else shares a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry

MAX_OBSERVATIONS = 1024
"""Observations one request may send (a batch beyond it is split by the client)."""


@dataclass(frozen=True)
class Answer:
    """Per sample: the greedy action and the probabilities the policy gives each action."""

    actions: np.ndarray
    probabilities: np.ndarray


class ServedModel:
    """The policy of a run directory or checkpoint, with what the server needs to check and describe requests."""

    def __init__(self, path: str | Path, registry: Registry) -> None:
        import torch
        from gymnasium import spaces

        from polyfuse.envs import action_names
        from polyfuse.training.saved_policy import load_saved_policy

        self.policy = load_saved_policy(Path(path), registry)
        config = self.policy.config
        action_space = self.policy.action_space
        if not isinstance(action_space, spaces.Discrete):
            self.policy.close()
            raise PolyfuseError(f"polyfuse serve answers with one discrete action per observation; {config.env.id}'s "
                                f"action space is {action_space}")
        self.action_start = int(action_space.start)
        self.observation_space = self.policy.observation_space
        self.keys = tuple(dict.fromkeys(m.key or name for name, m in config.modalities.items()))
        self.action_names = action_names(config.env.id, config.env.kwargs)
        self.run_id = str(self.policy.location.parent)
        self.location = self.policy.location
        self.step = self.policy.step
        for value in vars(self.policy.optimizer).values():
            if isinstance(value, torch.nn.Module):
                value.eval()

    def __call__(self, observations: dict[str, Any]) -> Answer:
        """Greedy actions and action probabilities for a batch (one forward pass)."""
        import torch

        optimizer = self.policy.optimizer
        with torch.inference_mode():
            logits = optimizer.action_logits(observations)
            probabilities = optimizer.action_probabilities(logits).float()
        actions = logits.argmax(dim=-1).cpu().numpy().astype(np.int64) + self.action_start
        return Answer(actions, probabilities.cpu().numpy())

    def describe(self) -> dict[str, Any]:
        """What ``/health`` tells: which run, which checkpoint, what it reads and answers."""
        return {
            "run": self.run_id, "checkpoint": str(self.location), "step": self.step,
            "env": self.policy.config.env.id, "optimizer": self.policy.config.optimizer.name,
            "observation_keys": list(self.keys), "actions": int(self.policy.action_space.n),
            "action_names": list(self.action_names) if self.action_names else None,
        }

    def close(self) -> None:
        self.policy.close()
