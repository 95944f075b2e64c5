"""The vector environment as optimizers see it: env steps counted, episodes and segments recorded.

Rewards returned by :meth:`TrackedVectorEnv.step` are the environment's own;
optimizers turn them into training rewards with the pipeline's reward source
where they consume them (see :mod:`polyfuse.rewards`). Episode returns in the
run's metrics are therefore the environment's returns: the task's own measure,
whatever the reward source.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyfuse.observations import select, stack
from polyfuse.rewards import Segment

SKIPPED_INFO_KEYS = frozenset({"final_obs", "final_info"})


@dataclass(frozen=True)
class EpisodeRecord:
    """A finished training episode, as the progress bar and metrics report it."""

    episode_return: float
    length: int
    success: bool


class TrackedVectorEnv:
    """A gymnasium vector env (same-step autoreset) that counts steps and records what happened.

    When an episode ends, the returned observation is already the next
    episode's first one; the final observation is in ``infos["final_obs"][i]``
    (gymnasium's ``AutoresetMode.SAME_STEP``). ``next_observations`` holds what
    the last step led to: the returned observations with each finished env's
    final one in place of its reset one (a transition's next observation).

    Success is ``info["success"]`` when the environment reports it, else a
    positive environment reward at termination (true of MiniGrid/BabyAI and
    DigitsVQA).

    With ``segment_length`` set (a reward source that learns asks for it),
    every step is also recorded per environment and cut into
    :class:`~polyfuse.rewards.Segment` s: whole episodes (``0``) or fragments of
    ``segment_length`` steps; :meth:`pop_segments` hands them over.
    """

    def __init__(self, envs: Any, segment_length: int | None = None) -> None:
        self.envs = envs
        self.num_envs: int = envs.num_envs
        self.single_observation_space = envs.single_observation_space
        self.single_action_space = envs.single_action_space
        self.env_steps = 0
        self.env_time_s = 0.0  # spent inside the environments' step (autoresets included)
        self.segment_length = segment_length
        self._observations: Mapping[str, Any] | None = None
        self.next_observations: Mapping[str, Any] = {}
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[EpisodeRecord] = []
        self._recorders = [_SegmentRecorder(i) for i in range(self.num_envs)] if segment_length is not None else []
        self._segments: list[Segment] = []

    def reset(self, seed: int | list[int] | None = None) -> tuple[Mapping[str, Any], dict[str, Any]]:
        observations, infos = self.envs.reset(seed=seed)
        self._observations = observations
        self._returns[:] = 0
        self._lengths[:] = 0
        for recorder in self._recorders:
            recorder.clear()
        return observations, infos

    def step(self, actions: np.ndarray) -> tuple[Mapping[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every environment; returns gymnasium's 5-tuple with the environment's own rewards."""
        if self._observations is None:
            raise RuntimeError("call reset() before step()")
        started = time.perf_counter()
        observations, env_rewards, terminated, truncated, infos = self.envs.step(actions)
        self.env_time_s += time.perf_counter() - started
        env_rewards = np.asarray(env_rewards, dtype=np.float32)
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        self.next_observations = final_observations(observations, infos, done)
        if self._recorders:
            self._record(np.asarray(actions), env_rewards, terminated, truncated, infos)
        self._returns += env_rewards
        self._lengths += 1
        self.env_steps += self.num_envs
        if done.any():
            ended = np.flatnonzero(done)
            successes = episode_successes(infos, env_rewards, terminated)[ended]
            self._finished += map(EpisodeRecord, self._returns[ended].tolist(), self._lengths[ended].tolist(),
                                  successes.tolist())
            self._returns[ended] = 0
            self._lengths[ended] = 0
        self._observations = observations
        return observations, env_rewards, terminated, truncated, infos

    def _record(
        self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
        infos: Mapping[str, Any],
    ) -> None:
        assert self._observations is not None and self.segment_length is not None
        for index, recorder in enumerate(self._recorders):
            recorder.add(select(self._observations, index), actions[index], float(rewards[index]),
                         env_info(infos, index))
            ended = bool(terminated[index] or truncated[index])
            if self.segment_length > 0 and len(recorder) == self.segment_length:
                self._segments.append(recorder.cut(bool(terminated[index]), bool(truncated[index])))
            elif ended:
                if self.segment_length == 0:
                    self._segments.append(recorder.cut(bool(terminated[index]), bool(truncated[index])))
                recorder.clear()  # a tail shorter than a fragment is dropped

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished since the last call."""
        finished, self._finished = self._finished, []
        return finished

    def pop_segments(self) -> list[Segment]:
        """Segments completed since the last call (none unless ``segment_length`` is set)."""
        segments, self._segments = self._segments, []
        return segments

    def close(self) -> None:
        self.envs.close()


class _SegmentRecorder:
    """One environment's steps since its segment began."""

    def __init__(self, env_index: int) -> None:
        self.env_index = env_index
        self.clear()

    def clear(self) -> None:
        self.observations: list[dict[str, Any]] = []
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.infos: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.actions)

    def add(self, observation: dict[str, Any], action: Any, reward: float, info: dict[str, Any]) -> None:
        self.observations.append(observation)
        self.actions.append(action)
        self.rewards.append(reward)
        self.infos.append(info)

    def cut(self, terminated: bool, truncated: bool) -> Segment:
        segment = Segment(
            observations=stack(self.observations),
            actions=np.asarray(self.actions),
            env_rewards=np.asarray(self.rewards, dtype=np.float32),
            infos=tuple(self.infos),
            terminated=terminated,
            truncated=truncated,
            env_index=self.env_index,
        )
        self.clear()
        return segment


def env_info(infos: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Environment ``index``'s entries of a vector env's info dict (those it set on this step)."""
    entries = {}
    for key, value in infos.items():
        if key.startswith("_") or key in SKIPPED_INFO_KEYS:
            continue
        mask = infos.get(f"_{key}")
        if mask is None or mask[index]:
            entries[key] = value[index]
    return entries


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
    if not done.any():
        return {key: value if isinstance(value, tuple) else value.copy() for key, value in observations.items()}
    result = {key: (list(value) if isinstance(value, tuple) else value.copy()) for key, value in observations.items()}
    for index in np.flatnonzero(done):
        final = infos["final_obs"][index]
        for key in result:
            result[key][index] = final[key]
    return {key: (tuple(value) if isinstance(value, list) else value) for key, value in result.items()}
