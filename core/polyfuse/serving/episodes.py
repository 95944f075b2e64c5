"""Episode logging: what the server answered, as trajectory segments for the feedback store.

The act handler only appends each answered step to its episode under a lock (no copying, no I/O), so
logging does not slow answers; a background thread turns finished episodes into :class:`Segment`
objects and hands them to a sink (``polyfuse_feedback.served``: the label store) once a second.
An episode is the steps a client sent under one id, ended by an outcome with ``done``; a step sent
without an id is an episode of its own. Rewards are what clients report after an action (unknown,
NaN, otherwise: a judge that needs true rewards abstains on them). Episodes idle past
``idle_timeout_s`` and, at shutdown, every open episode are written as truncated: nothing answered is lost.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from polyfuse.observations import Batch, select, stack
from polyfuse.rewards import Segment


class SegmentSink(Protocol):
    """Where finished segments go (the feedback plugin's store writer)."""

    def write(self, segments: list[Segment]) -> None: ...


@dataclass
class _Episode:
    steps: list[tuple[Batch, int, int, int]] = field(default_factory=list)  # (request batch, row, action, step)
    rewards: list[float] = field(default_factory=list)
    touched: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Finished:
    episode: _Episode
    terminated: bool
    truncated: bool


class EpisodeRecorder:
    """Collects answered steps into episodes and writes finished ones through ``sink`` off the request path."""

    def __init__(self, sink: SegmentSink, *, flush_every_s: float = 1.0, idle_timeout_s: float = 600.0,
                 max_steps: int = 1000, max_backlog: int = 100_000, log: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.flush_every_s, self.idle_timeout_s, self.max_steps = sink, flush_every_s, idle_timeout_s, max_steps
        self.log = log if log is not None else sys.stderr
        self.clock = clock
        self.max_backlog = max_backlog
        self.written = 0
        self.failed_writes = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._open: dict[str, _Episode] = {}
        self._finished: list[_Finished] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="polyfuse-episode-log", daemon=True)
        self._thread.start()

    def answered(self, observations: Batch, actions: np.ndarray, episodes: list[str | None], policy_step: int) -> None:
        """Record that row ``i`` of ``observations`` was answered with ``actions[i]`` in episode ``episodes[i]``
        by the policy saved at ``policy_step`` (kept in each step's infos: after a reload, who acted)."""
        now = self.clock()
        with self._lock:
            for row, (action, episode_id) in enumerate(zip(actions.tolist(), episodes)):
                if episode_id is None:
                    self._finished.append(_Finished(_Episode([(observations, row, action, policy_step)], [np.nan]),
                                                    False, False))
                    continue
                episode = self._open.get(episode_id)
                if episode is not None and len(episode.steps) >= self.max_steps:
                    # a long episode is written in fragments, each cut when its next step comes (not at its
                    # last: the outcome of that step is still to be reported to the open episode)
                    self._finished.append(_Finished(self._open.pop(episode_id), False, False))
                episode = self._open.setdefault(episode_id, _Episode())
                episode.steps.append((observations, row, action, policy_step))
                episode.rewards.append(np.nan)
                episode.touched = now

    def outcome(self, episode_id: str, reward: float | None, done: bool) -> bool:
        """The reward the client observed after the episode's last action, and whether the episode ended;
        False when no episode of that id is open (never answered, or already ended)."""
        with self._lock:
            episode = self._open.get(episode_id)
            if episode is None:
                return False
            if reward is not None:
                episode.rewards[-1] = float(reward)
            episode.touched = self.clock()
            if done:
                self._finished.append(_Finished(self._open.pop(episode_id), True, False))
        return True

    def prometheus(self) -> str:
        """Its counters in Prometheus' text format (appended to the server's ``/metrics``)."""
        with self._lock:
            waiting = len(self._finished) + len(self._open)
        return "\n".join([
            "# HELP polyfuse_episodes_logged_total episodes written to the feedback store",
            "# TYPE polyfuse_episodes_logged_total counter", f"polyfuse_episodes_logged_total {self.written}",
            "# HELP polyfuse_episode_writes_failed_total writes to the feedback store that failed (retried)",
            "# TYPE polyfuse_episode_writes_failed_total counter",
            f"polyfuse_episode_writes_failed_total {self.failed_writes}",
            "# HELP polyfuse_episodes_dropped_total episodes dropped unwritten (the oldest past the backlog limit)",
            "# TYPE polyfuse_episodes_dropped_total counter", f"polyfuse_episodes_dropped_total {self.dropped}",
            "# HELP polyfuse_episodes_waiting episodes open or not yet written",
            "# TYPE polyfuse_episodes_waiting gauge", f"polyfuse_episodes_waiting {waiting}"]) + "\n"

    def close(self) -> None:
        """Write everything: finished episodes, and open ones as truncated (the sink stays its owner's to close)."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._finished += [_Finished(e, False, True) for e in self._open.values()]
            self._open.clear()
        self._flush()
        if self._finished:
            print(f"polyfuse serve: {len(self._finished)} episodes could not be written to the feedback store "
                  "and are lost", file=self.log, flush=True)

    def _work(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self._flush()

    def _flush(self) -> None:
        now = self.clock()
        with self._lock:
            idle = [key for key, episode in self._open.items() if now - episode.touched > self.idle_timeout_s]
            self._finished += [_Finished(self._open.pop(key), False, True) for key in idle]
            finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            self.sink.write([_segment(item) for item in finished])
        except Exception as exc:  # noqa: BLE001 (kept and tried again: the store may be back next time)
            self.failed_writes += 1
            print(f"polyfuse serve: writing {len(finished)} episodes to the feedback store failed "
                  f"({type(exc).__name__}: {exc}); trying again in {self.flush_every_s:g} s", file=self.log, flush=True)
            with self._lock:
                self._finished[:0] = finished
                excess = len(self._finished) - self.max_backlog
                if excess > 0:  # a store down for long must not grow the server's memory without bound
                    del self._finished[:excess]
                    self.dropped += excess
            if excess > 0:
                print(f"polyfuse serve: {excess} of the oldest unwritten episodes dropped (more than "
                      f"{self.max_backlog} waiting for the feedback store)", file=self.log, flush=True)
            return
        self.written += len(finished)


def _segment(finished: _Finished) -> Segment:
    episode = finished.episode
    return Segment(
        observations=stack([select(batch, row) for batch, row, _, _ in episode.steps]),
        actions=np.asarray([action for _, _, action, _ in episode.steps], dtype=np.int64),
        env_rewards=np.asarray(episode.rewards, dtype=np.float32),
        infos=[{"policy_step": step} for _, _, _, step in episode.steps], terminated=finished.terminated,
        truncated=finished.truncated, env_index=0,
    )
