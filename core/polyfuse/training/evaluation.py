"""Held-out evaluation: a deterministic policy on episodes training never sees.

Episodes come from the environment's held-out variant when it declares one
(``metadata["polyfuse.eval_kwargs"]``, e.g. DigitsVQA's test split) and are
always seeded from :data:`~polyfuse.training.seeding.EVAL_SEED_BASE` up,
where training seeds never go. Every evaluation uses the same episodes, so
points on the learning curve are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from polyfuse.config import EnvConfig
from polyfuse.envs import eval_kwargs, make_vector_env
from polyfuse.training.vector_env import episode_successes
from polyfuse.training.seeding import EVAL_SEED_BASE

Policy = Callable[[Mapping[str, Any]], np.ndarray]
MAX_PARALLEL = 32


class Evaluator:
    """Runs ``episodes`` held-out episodes, ``MAX_PARALLEL`` at a time; reports mean return and success."""

    def __init__(self, env: EnvConfig, episodes: int) -> None:
        self.episodes = episodes
        self.num_envs = min(episodes, MAX_PARALLEL)
        self.envs = make_vector_env(env.id, eval_kwargs(env.id, env.kwargs), num_envs=self.num_envs)

    def evaluate(self, policy: Policy) -> dict[str, float]:
        """``eval/return``, ``eval/success``, ``eval/length``, ``eval/episodes``, in the env's own reward."""
        returns, lengths, successes = [], [], []
        for start in range(0, self.episodes, self.num_envs):
            count = min(self.num_envs, self.episodes - start)
            seeds = [EVAL_SEED_BASE + start + i for i in range(self.num_envs)]
            result = self._run_round(policy, seeds)
            returns += result[0][:count]
            lengths += result[1][:count]
            successes += result[2][:count]
        return {
            "eval/return": float(np.mean(returns)),
            "eval/success": float(np.mean(successes)),
            "eval/length": float(np.mean(lengths)),
            "eval/episodes": self.episodes,
        }

    def _run_round(self, policy: Policy, seeds: list[int]) -> tuple[list[float], list[int], list[bool]]:
        """One episode per env; an env that finishes early auto-resets and its later steps are ignored."""
        observations, _ = self.envs.reset(seed=seeds)
        n = self.num_envs
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        success, running = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        while running.any():
            with torch.no_grad():
                actions = np.asarray(policy(observations))
            observations, rewards, terminated, truncated, infos = self.envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            ended = running & (terminated | truncated)
            success[ended] = episode_successes(infos, np.asarray(rewards), np.asarray(terminated))[ended]
            running &= ~ended
        return returns.tolist(), lengths.tolist(), success.tolist()

    def close(self) -> None:
        self.envs.close()
