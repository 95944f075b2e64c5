"""Held-out evaluation: a policy's greedy and sampled actions on episodes training never sees.

Episodes come from the environment's held-out variant when it declares one
(``metadata["polyfuse.eval_kwargs"]``, e.g. DigitsVQA's test split) and are
always seeded from :data:`~polyfuse.training.seeding.EVAL_SEED_BASE` up,
where training seeds never go. Every evaluation plays the same episodes, in
both modes, so points on the learning curve and the two modes are comparable.

Two modes, because they answer different questions: ``greedy`` (each step's
most likely action, ``act(deterministic=True)``) is what a deployed policy
usually does, and loops in partially observed worlds where ``sampled``
(``act(deterministic=False)``: the policy's own distribution; DQN's
epsilon-greedy at its current rate) escapes. Sampled actions are drawn from a
generator seeded for each round of episodes (see :func:`seeded_sampling`), so
an evaluation gives the same figures however often it runs, and however its
rounds are spread over processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from polyfuse.config import EnvConfig
from polyfuse.envs import eval_kwargs, make_vector_env
from polyfuse.training.seeding import EVAL_SEED_BASE
from polyfuse.training.vector_env import episode_successes

Mode = Literal["greedy", "sampled"]
MODES: tuple[Mode, ...] = ("greedy", "sampled")
MAX_PARALLEL = 32
"""Episodes played at once: a round. Rounds are the unit of work, seeding and parallelism."""


class Actor(Protocol):
    """What evaluation needs of a policy: an RL optimizer's ``act``, and ``reset_memory`` before each round."""

    def act(self, observations: Any, deterministic: bool = True) -> np.ndarray: ...

    def reset_memory(self, batch: int) -> None: ...


class StepObserver(Protocol):
    """Watches a round as it is played (episode recording)."""

    def before_step(self, envs: Any, observations: Any, actions: np.ndarray, running: np.ndarray) -> None: ...

    def after_step(self, rewards: np.ndarray, ended: np.ndarray, success: np.ndarray) -> None: ...


@dataclass
class Episodes:
    """Per-episode results of one mode on one environment, in episode order."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)

    def extend(self, other: Episodes) -> None:
        self.returns += other.returns
        self.lengths += other.lengths
        self.successes += other.successes

    def __len__(self) -> int:
        return len(self.returns)


def round_seed(start: int) -> int:
    """The seed of sampled actions in the round whose first episode is number ``start``."""
    return int(np.random.SeedSequence([EVAL_SEED_BASE, start]).generate_state(1)[0])


@contextmanager
def seeded_sampling(actor: Any, seed: int) -> Iterator[None]:
    """Sampled actions from a generator seeded with ``seed``; the actor's own is put back afterwards.

    Optimizers built on :class:`polyfuse.rl.base.Algorithm` draw sampled
    actions from ``rng["act"]`` (ppo, a2c, dqn, dpo); evaluation swaps in a
    fresh generator of the same kind, so it is reproducible and never moves
    the training run's stream. Other optimizers sample as they sample.
    """
    streams = getattr(actor, "rng", None)
    if not isinstance(streams, dict) or "act" not in streams:
        yield
        return
    own = streams["act"]
    streams["act"] = torch.Generator().manual_seed(seed) if isinstance(own, torch.Generator) \
        else np.random.default_rng(seed)
    try:
        yield
    finally:
        streams["act"] = own


class Evaluator:
    """Plays ``episodes`` held-out episodes of one environment, ``MAX_PARALLEL`` at a time, in each mode asked."""

    def __init__(self, env: EnvConfig, episodes: int) -> None:
        self.env = env
        self.episodes = episodes
        self.num_envs = min(episodes, MAX_PARALLEL)
        self.envs = make_vector_env(env.id, eval_kwargs(env.id, env.kwargs), num_envs=self.num_envs)

    @property
    def rounds(self) -> int:
        return -(-self.episodes // self.num_envs)

    @property
    def observation_space(self) -> Any:
        return self.envs.single_observation_space

    @property
    def action_space(self) -> Any:
        return self.envs.single_action_space

    def evaluate(
        self, actor: Actor, modes: Sequence[Mode], on_round: Callable[[int], None] | None = None
    ) -> dict[Mode, Episodes]:
        """Every episode, in each of ``modes`` (the same episodes in each); ``on_round`` gets each round's count."""
        results: dict[Mode, Episodes] = {}
        for mode in modes:
            results[mode] = Episodes()
            for index in range(self.rounds):
                played = self.play_round(actor, mode, index)
                results[mode].extend(played)
                if on_round is not None:
                    on_round(len(played))
        return results

    def play_round(self, actor: Actor, mode: Mode, index: int, observer: StepObserver | None = None) -> Episodes:
        """Round ``index``: episodes ``index * num_envs`` on, one per env; later steps of an env that ended are ignored."""
        start = index * self.num_envs
        count = min(self.num_envs, self.episodes - start)
        seeds = [EVAL_SEED_BASE + start + i for i in range(self.num_envs)]
        deterministic = mode == "greedy"
        with seeded_sampling(actor, round_seed(start)):
            returns, lengths, success = self._play(actor, deterministic, seeds, observer)
        return Episodes(returns[:count], lengths[:count], success[:count])

    def _play(
        self, actor: Actor, deterministic: bool, seeds: list[int], observer: StepObserver | None
    ) -> tuple[list[float], list[int], list[bool]]:
        observations, _ = self.envs.reset(seed=seeds)
        n = self.num_envs
        actor.reset_memory(n)  # a round plays one episode per env: a policy with memory starts each from scratch
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        success, running = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        while running.any():
            with torch.no_grad():
                actions = np.asarray(actor.act(observations, deterministic=deterministic))
            if observer is not None:
                observer.before_step(self.envs, observations, actions, running)
            observations, rewards, terminated, truncated, infos = self.envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            ended = running & (terminated | truncated)
            success[ended] = episode_successes(infos, np.asarray(rewards), np.asarray(terminated))[ended]
            if observer is not None:
                observer.after_step(np.asarray(rewards), ended, success)
            running &= ~ended
        return returns.tolist(), lengths.tolist(), success.tolist()

    def close(self) -> None:
        self.envs.close()
