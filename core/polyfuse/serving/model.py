"""A trained run's policy as a function of a batch: greedy actions and the policy's action probabilities,
and the reward model's score of each answer when the run learned its reward (RLHF).

A policy with memory continues each client episode from what it remembers of it
(:mod:`polyfuse.serving.memories`). Loaded through :func:`polyfuse.training.saved_policy.load_saved_policy` (no pickle), every module the
optimizer holds in eval mode (serving never trains, and a layer such as batch norm must not read
statistics from whoever else shares a batch). A learned reward is rebuilt from the checkpoint to score
only (``RunContext.asks`` false: no feedback source, label store or annotation server is started).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyfuse.errors import PolyfuseError
from polyfuse.observations import take
from polyfuse.registry import Registry
from polyfuse.serving.memories import EpisodeMemories, waves

MAX_OBSERVATIONS = 1024
"""Observations one request may send (a batch beyond it is split by the client)."""


@dataclass(frozen=True)
class Answer:
    """Per sample: the greedy action, the probabilities the policy gives each action, where the run's
    reward can score it, the reward of that action and the reward ensemble's disagreement, and for a policy
    with memory, how many earlier steps of the sample's episode it remembered (else None)."""

    actions: np.ndarray
    probabilities: np.ndarray
    rewards: np.ndarray | None = None
    reward_spreads: np.ndarray | None = None
    memory_steps: np.ndarray | None = None


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
        self.action_space = action_space
        self.action_start = int(action_space.start)
        self.observation_space = self.policy.observation_space
        self.keys = tuple(dict.fromkeys(m.key or name for name, m in config.modalities.items()))
        self.action_names = action_names(config.env.id, config.env.kwargs)
        self.run_id = str(self.policy.location.parent)
        self.location = self.policy.location
        self.step = self.policy.step
        self.memory_size = self.policy.optimizer.memory_size
        self.memories = EpisodeMemories(self.memory_size) if self.memory_size else None
        self._closed = False
        try:
            self.reward = _scoring_reward(self.policy, registry)
        except BaseException:
            self.policy.close()
            raise
        held = [*vars(self.policy.optimizer).values(), *(vars(self.reward).values() if self.reward is not None else ())]
        for value in held:
            if isinstance(value, torch.nn.Module):
                value.eval()

    def __call__(self, observations: dict[str, Any], episodes: list[str | None]) -> Answer:
        """Greedy actions and action probabilities for a batch (one forward pass; with a memory, one per step
        of the same episode in the batch), each sample continuing its episode when the policy has a memory."""
        import torch

        optimizer = self.policy.optimizer
        memory_steps = None
        with torch.inference_mode():
            if self.memories is None:
                logits = optimizer.action_logits(observations)
            else:
                logits, memory_steps = self._continue(observations, episodes)
            probabilities = optimizer.action_probabilities(logits).float()
        chosen = logits.argmax(dim=-1).cpu().numpy().astype(np.int64)
        estimate = self.reward.estimate(observations, chosen) if self.reward is not None else None
        rewards, spreads = estimate if estimate is not None else (None, None)
        return Answer(chosen + self.action_start, probabilities.cpu().numpy(), rewards, spreads, memory_steps)

    def _continue(self, observations: dict[str, Any], episodes: list[str | None]) -> tuple[Any, np.ndarray]:
        """Logits of one step of each sample's episode from its memory, and how many steps each memory held."""
        import torch

        assert self.memories is not None
        if any(episode is None for episode in episodes):  # the app refuses such requests first
            raise ValueError("a policy with memory needs the episode of every observation")
        named = [str(episode) for episode in episodes]
        logits: Any = None
        memory_steps = np.zeros(len(named), np.int64)
        for rows in waves(named):
            ids = [named[row] for row in rows]
            memory, held = self.memories.recall(ids)
            batch = observations if len(rows) == len(named) else take(observations, rows)
            part, memory = self.policy.optimizer.step_logits(batch, memory)
            self.memories.keep(ids, memory, held)
            if logits is None:
                logits = torch.empty(len(named), part.shape[1], dtype=part.dtype)
            logits[torch.from_numpy(rows)] = part
            memory_steps[rows] = held
        return logits, memory_steps

    def forget(self, episode: str) -> bool:
        """End ``episode``'s memory (its outcome said done); whether the policy remembered it."""
        return self.memories is not None and self.memories.forget(episode)

    def remembers(self, episode: str) -> bool:
        return self.memories is not None and episode in self.memories

    def describe(self) -> dict[str, Any]:
        """What ``/health`` tells: which run, which checkpoint, what it reads and answers."""
        return {
            "run": self.run_id, "checkpoint": str(self.location), "step": self.step,
            "env": self.policy.config.env.id, "optimizer": self.policy.config.optimizer.name,
            "observation_keys": list(self.keys), "actions": int(self.policy.action_space.n),
            "action_names": list(self.action_names) if self.action_names else None,
            "reward": self.policy.config.reward.name if self.reward is not None else None,
            "memory": self.memory_size,
        }

    def close(self) -> None:
        """Release the policy's environment (once; a replaced model is closed by the server, the last by its owner)."""
        if not self._closed:
            self._closed = True
            if self.reward is not None:
                self.reward.close()
            self.policy.close()


def _scoring_reward(policy: Any, registry: Registry) -> Any:
    """The run's learned reward with the weights of the policy's checkpoint, to score answers; None for the
    environment's reward (a served answer has no environment behind it)."""
    config = policy.config
    if config.reward.name == "env":
        return None
    from polyfuse.components import Kind
    from polyfuse.envs import action_names
    from polyfuse.network import NetworkFactory
    from polyfuse.rewards import RunContext
    from polyfuse.training.checkpoint import load_checkpoint

    state = load_checkpoint(policy.location, required=("reward",))["reward"]
    reward = registry.create(Kind.REWARD, config.reward.name, config.reward.params, context=RunContext(
        policy.observation_space, policy.action_space,
        NetworkFactory(config, policy.observation_space, registry), config.trainer.seed, policy.location.parent,
        planned_updates=1, registry=registry, env_id=config.env.id,
        action_names=action_names(config.env.id, config.env.kwargs), asks=False))
    try:
        reward.load_state_dict(state)
    except BaseException:
        reward.close()
        raise
    return reward
