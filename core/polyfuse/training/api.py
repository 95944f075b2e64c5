"""What the trainer hands an RL optimizer plugin, and what it expects back.

The trainer owns the run (seeding, progress, evaluation, metrics,
checkpoints, resume); an optimizer owns the learning (networks, rollouts or
replay, updates). They meet here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from polyfuse.network import MultimodalNetwork
from polyfuse.rewards import RewardSource, TransitionBatch


@dataclass(frozen=True)
class EpisodeRecord:
    """A finished training episode, as the progress bar and metrics report it."""

    episode_return: float
    length: int
    success: bool


class TrackedVectorEnv:
    """A gymnasium vector env (same-step autoreset) as optimizers see it.

    Each ``step`` replaces the environment's rewards with the reward
    source's, counts environment steps and records finished episodes. When an
    episode ends, the returned observation is already the next episode's
    first one; the final observation is in ``infos["final_obs"][i]`` (as
    gymnasium's ``AutoresetMode.SAME_STEP`` defines).

    ``next_observations`` holds what the last step led to: the returned
    observations with each finished env's final one in place of its reset
    one (what a transition's next observation is).

    Success is ``info["success"]`` when the environment reports it, else a
    positive environment reward at termination (true of MiniGrid/BabyAI and
    DigitsVQA).
    """

    def __init__(self, envs: Any, reward_source: RewardSource) -> None:
        self.envs = envs
        self.reward_source = reward_source
        self.num_envs: int = envs.num_envs
        self.single_observation_space = envs.single_observation_space
        self.single_action_space = envs.single_action_space
        self.total_steps = 0
        self.env_time_s = 0.0  # spent inside the environments' step (autoresets included)
        self._observations: Mapping[str, Any] | None = None
        self.next_observations: Mapping[str, Any] = {}
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[EpisodeRecord] = []

    def reset(self, seed: int | list[int] | None = None) -> tuple[Mapping[str, Any], dict[str, Any]]:
        observations, infos = self.envs.reset(seed=seed)
        self._observations = observations
        self._returns[:] = 0
        self._lengths[:] = 0
        return observations, infos

    def step(self, actions: np.ndarray) -> tuple[Mapping[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._observations is None:
            raise RuntimeError("call reset() before step()")
        started = time.perf_counter()
        observations, env_rewards, terminated, truncated, infos = self.envs.step(actions)
        self.env_time_s += time.perf_counter() - started
        done = np.logical_or(terminated, truncated)
        next_observations = self.next_observations = final_observations(observations, infos, done)
        rewards = self.reward_source(
            TransitionBatch(self._observations, np.asarray(actions), np.asarray(env_rewards), next_observations,
                            terminated, truncated, infos)
        )
        self._returns += rewards
        self._lengths += 1
        self.total_steps += self.num_envs
        if done.any():
            ended = np.flatnonzero(done)
            successes = episode_successes(infos, np.asarray(env_rewards), np.asarray(terminated))[ended]
            self._finished += map(EpisodeRecord, self._returns[ended].tolist(), self._lengths[ended].tolist(),
                                  successes.tolist())
            self._returns[ended] = 0
            self._lengths[ended] = 0
        self._observations = observations
        return observations, rewards, terminated, truncated, infos

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished since the last call."""
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        self.envs.close()


def episode_successes(infos: Mapping[str, Any], env_rewards: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """Per env, whether an episode that ended on this step succeeded (meaningless for the others)."""
    final_info = infos.get("final_info")
    if isinstance(final_info, Mapping) and "success" in final_info:
        return np.asarray(final_info["success"], dtype=bool)
    if "success" in infos:
        return np.asarray(infos["success"], dtype=bool)
    return terminated & (env_rewards > 0)


def final_observations(observations: Mapping[str, Any], infos: Mapping[str, Any], done: np.ndarray) -> dict[str, Any]:
    """The observations after a step, with each finished env's final observation in place of its reset one."""
    result = {key: (list(value) if isinstance(value, tuple) else value.copy()) for key, value in observations.items()}
    if not done.any():
        return result
    for index in np.flatnonzero(done):
        final = infos["final_obs"][index]
        for key in result:
            result[key][index] = final[key]
    return {key: (tuple(value) if isinstance(value, list) else value) for key, value in result.items()}


@dataclass
class Pipeline:
    """Everything an optimizer needs to train: environments, a network factory and the run's randomness."""

    envs: TrackedVectorEnv
    make_network: Callable[[], MultimodalNetwork]
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def action_space(self) -> Any:
        return self.envs.single_action_space

    @property
    def observation_space(self) -> Any:
        return self.envs.single_observation_space


class RLOptimizer:
    """Base class of RL optimizer plugins (DQN, PPO, …).

    The trainer calls ``set_total_steps`` and ``setup`` once, then ``iterate`` until the step budget
    is spent, evaluating with ``act`` and checkpointing with ``state_dict``
    in between. ``action_logits`` serves supervised warm start (behaviour
    cloning), which the trainer runs before the first ``iterate``.
    """

    def set_total_steps(self, total_steps: int) -> None:
        """The run's step budget (``trainer.total_steps``), told before ``setup`` and again on resume.

        For schedules (learning-rate annealing, exploration); optimizers without one ignore it.
        """

    def setup(self, pipeline: Pipeline) -> None:
        """Build networks, optimizers and buffers; reset the environments."""
        raise NotImplementedError

    def iterate(self) -> dict[str, float]:
        """Step the environments and update once (a rollout + epochs, or some steps + gradient steps).

        Returns scalar training metrics (losses, entropy, epsilon, …).
        """
        raise NotImplementedError

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations (evaluation and deployment)."""
        raise NotImplementedError

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """Unnormalised action preferences, differentiable w.r.t. ``trainable_parameters``."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters warm start may update."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: a nested dict of tensors, numpy arrays and JSON values."""
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``setup``)."""
        raise NotImplementedError
