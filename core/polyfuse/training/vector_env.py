"""The vector environment as optimizers see it: env steps counted, episodes and segments recorded.

Rewards returned by :meth:`TrackedVectorEnv.step` are the environment's own;
optimizers turn them into training rewards with the pipeline's reward source
where they consume them (see :mod:`polyfuse.rewards`). Episode returns in the
run's metrics are therefore the environment's returns: the task's own measure,
whatever the reward source.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from polyfuse.observations import select, stack
from polyfuse.rewards import Segment
from polyfuse.training.replay import ContextReplayer, ReplayableSegment

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
    ``segment_length`` steps; :meth:`pop_segments` hands them over. Where the environments can give
    their episodes' states (:func:`episode_replayer`), each segment is a
    :class:`~polyfuse.training.replay.ReplayableSegment`: other actions can be tried where it began.
    """

    def __init__(self, envs: Any, segment_length: int | None = None, *, replayable: bool = True) -> None:
        """``replayable=False`` keeps segments plain: segments that leave this process (a pipelined sampler's
        worker) cannot take the replayer, whose environments stay here."""
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
        self._replayer = episode_replayer(envs) if segment_length is not None and replayable else None
        self._segments: list[Segment] = []
        self.restored = False  # set_state() restored saved episodes: optimizers keep acting on them

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
        if self._replayer is not None and any(not len(recorder) for recorder in self._recorders):
            for recorder, state in zip(self._recorders, self._replayer.states()):
                if not len(recorder):  # a segment begins with this step: where to replay it from
                    recorder.start_state = state
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
            ended = bool(terminated[index] or truncated[index])
            recorder.add(select(self._observations, index), actions[index], float(rewards[index]),
                         step_info(infos, index, ended))
            if self.segment_length > 0 and len(recorder) == self.segment_length:
                self._segments.append(recorder.cut(bool(terminated[index]), bool(truncated[index]), self._replayer))
            elif ended:
                if self.segment_length == 0:
                    self._segments.append(recorder.cut(bool(terminated[index]), bool(truncated[index]),
                                                       self._replayer))
                recorder.clear()  # a tail shorter than a fragment is dropped

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished since the last call."""
        finished, self._finished = self._finished, []
        return finished

    def pop_segments(self) -> list[Segment]:
        """Segments completed since the last call (none unless ``segment_length`` is set)."""
        segments, self._segments = self._segments, []
        return segments

    @property
    def observations(self) -> Mapping[str, Any] | None:
        """The observations the next actions are taken in (the last ``reset``'s or ``step``'s)."""
        return self._observations

    def get_state(self) -> dict[str, Any] | None:
        """Everything needed to continue exactly: the environments' state (``None`` when they cannot
        give it, see :func:`env_state`), the observations they are in, and the episodes and segments
        in progress; arrays and JSON values only, for a checkpoint without pickle."""
        inner = env_state(self.envs)
        if inner is None or self._observations is None:
            return None
        return {
            "envs": inner,
            "observations": dict(self._observations),
            "returns": self._returns.copy(),
            "lengths": self._lengths.copy(),
            "env_steps": self.env_steps,
            "recorders": [recorder.get_state() for recorder in self._recorders],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state`'s state: the next step continues the saved episodes."""
        set_env_state(self.envs, state["envs"])
        self._observations = dict(state["observations"])
        self._returns[:] = np.asarray(state["returns"], dtype=np.float64)
        self._lengths[:] = np.asarray(state["lengths"], dtype=np.int64)
        self.env_steps = int(state["env_steps"])
        for recorder, saved in zip(self._recorders, state.get("recorders") or []):
            recorder.set_state(saved)
        self._finished, self._segments = [], []
        self.restored = True

    def close(self) -> None:
        self.envs.close()


def env_state(envs: Any) -> dict[str, Any] | None:
    """A vector env's state as arrays and JSON values, or ``None`` when it cannot give one without pickle.

    The optional protocol: an env with ``get_state() -> dict`` and ``set_state(dict)`` (DigitsVQA's
    native vector env). A :class:`~gymnasium.vector.SyncVectorEnv` (same-step autoreset, so it keeps
    nothing between steps itself) qualifies when every sub-env's unwrapped env does (DigitsVQA's
    single env); their ``TimeLimit`` counters are saved with them. Others (MiniGrid/BabyAI, whose
    grids are Python objects, and async workers) return ``None``.
    """
    if callable(getattr(envs, "get_state", None)) and callable(getattr(envs, "set_state", None)):
        return {"kind": "vector", "state": envs.get_state()}
    sub_envs = _sync_sub_envs(envs)
    if sub_envs is None:
        return None
    return {"kind": "sync", "envs": [
        {"state": env.unwrapped.get_state(), "elapsed_steps": [int(w._elapsed_steps or 0) for w in _time_limits(env)]}
        for env in sub_envs
    ]}


def set_env_state(envs: Any, state: Mapping[str, Any]) -> None:
    """Restore :func:`env_state`'s state into an env built from the same config."""
    if state["kind"] == "vector":
        envs.set_state(state["state"])
        return
    sub_envs = _sync_sub_envs(envs)
    if sub_envs is None or len(sub_envs) != len(state["envs"]):
        raise ValueError("the saved environment state does not fit these environments")
    for env, saved in zip(sub_envs, state["envs"]):
        env.unwrapped.set_state(saved["state"])
        for wrapper, elapsed in zip(_time_limits(env), saved["elapsed_steps"]):
            wrapper._elapsed_steps = int(elapsed)
        _mark_reset(env)


def episode_replayer(envs: Any) -> ContextReplayer | None:
    """What replays a vector env's episodes from a recorded state with other actions, or ``None`` when it cannot.

    The optional protocol: ``episode_states() -> list`` (each environment's episode in progress) and
    ``scratch_env()`` (a single env, apart from these, whose ``set_state`` takes those states: DigitsVQA's
    native vector env). A :class:`~gymnasium.vector.SyncVectorEnv` qualifies when every sub-env's
    unwrapped env has ``get_state``/``set_state`` (its scratch env is a copy of the first).
    """
    if callable(getattr(envs, "episode_states", None)) and callable(getattr(envs, "scratch_env", None)):
        return ContextReplayer(envs.episode_states, envs.scratch_env)
    sub_envs = _sync_sub_envs(envs)
    if sub_envs is None:
        return None
    return ContextReplayer(lambda: [env.unwrapped.get_state() for env in sub_envs],
                           lambda: copy.deepcopy(sub_envs[0].unwrapped))


def _sync_sub_envs(envs: Any) -> list[Any] | None:
    from gymnasium.vector import SyncVectorEnv

    if not isinstance(envs, SyncVectorEnv):
        return None
    if all(callable(getattr(env.unwrapped, "get_state", None)) and callable(getattr(env.unwrapped, "set_state", None))
           for env in envs.envs):
        return list(envs.envs)
    return None


def _time_limits(env: Any) -> list[Any]:
    from gymnasium.wrappers import TimeLimit

    found = []
    while isinstance(env, gymnasium.Wrapper):
        if isinstance(env, TimeLimit):
            found.append(env)
        env = env.env
    return found


def _mark_reset(env: Any) -> None:
    """Tell order-enforcing wrappers that the env has been reset (its episode is restored, not new)."""
    while isinstance(env, gymnasium.Wrapper):
        if hasattr(env, "_has_reset"):
            env._has_reset = True
        env = env.env


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
        self.start_state: Any = None  # the env's state when the segment began, where it can give one

    def __len__(self) -> int:
        return len(self.actions)

    def get_state(self) -> dict[str, Any]:
        return {"observations": list(self.observations), "actions": list(self.actions),
                "rewards": list(self.rewards), "infos": list(self.infos), "start_state": self.start_state}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.observations = [dict(o) for o in state["observations"]]
        self.actions, self.rewards = list(state["actions"]), [float(r) for r in state["rewards"]]
        self.infos = [dict(i) for i in state["infos"]]
        self.start_state = state.get("start_state")

    def add(self, observation: dict[str, Any], action: Any, reward: float, info: dict[str, Any]) -> None:
        self.observations.append(observation)
        self.actions.append(action)
        self.rewards.append(reward)
        self.infos.append(info)

    def cut(self, terminated: bool, truncated: bool, replayer: ContextReplayer | None) -> Segment:
        fields = {"observations": stack(self.observations), "actions": np.asarray(self.actions),
                  "env_rewards": np.asarray(self.rewards, dtype=np.float32), "infos": tuple(self.infos),
                  "terminated": terminated, "truncated": truncated, "env_index": self.env_index}
        segment = (Segment(**fields) if replayer is None or self.start_state is None
                   else ReplayableSegment(**fields, start_state=self.start_state, replayer=replayer))
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


def step_info(infos: Mapping[str, Any], index: int, ended: bool) -> dict[str, Any]:
    """Environment ``index``'s info for the step it just took.

    Under same-step autoreset, an environment whose episode ended returns the
    next episode's reset info at the top level and its last step's own in
    ``final_info``: that one belongs to the step (a judge reads it).
    """
    final_info = infos.get("final_info")
    if ended and isinstance(final_info, Mapping):
        mask = infos.get("_final_info")
        if mask is None or mask[index]:
            return env_info(final_info, index)
    return env_info(infos, index)


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
