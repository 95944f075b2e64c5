"""What a served policy with memory remembers of each client's episode.

A policy with memory (``optimizer.params.memory``) acts on the episode so far, so the server keeps one
memory per episode id its clients send: an unknown id starts from zeros (a new episode), each answered
step replaces the episode's memory with the one after it, and an episode is forgotten at its outcome
with ``"done": true``, after ``idle_timeout_s`` without a step, or, oldest first, beyond
``max_episodes``. The memories belong to one model: a hot-reloaded model starts with none, since
another network's memories mean nothing to it. Each answer says how many earlier steps its memory
held (``memory_steps``), so a client sees when the server forgot its episode.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MAX_EPISODES = 10_000
"""Episodes remembered at once (at ``memory: 128``, 5 MB); beyond it the longest idle is forgotten."""

IDLE_TIMEOUT_S = 600.0


class EpisodeMemories:
    """Memory rows by episode id, safe to use from the inference thread and the request handlers at once."""

    def __init__(self, size: int, *, max_episodes: int = MAX_EPISODES, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import torch

        if max_episodes <= 0:
            raise ValueError(f"max_episodes must be positive, got {max_episodes}")
        self.size, self.max_episodes, self.idle_timeout_s, self.clock = size, max_episodes, idle_timeout_s, clock
        self.forgotten = 0
        self._empty = torch.zeros(size)
        self._episodes: OrderedDict[str, tuple[Any, int, float]] = OrderedDict()  # id -> (memory, steps, touched)
        self._lock = threading.Lock()

    def recall(self, episodes: Sequence[str]) -> tuple[Any, np.ndarray]:
        """The memories ``(B, size)`` of distinct ``episodes`` (zeros for a new one) and the steps each holds."""
        import torch

        with self._lock:
            self._forget_idle()
            held = [self._episodes.get(episode, (self._empty, 0, 0.0)) for episode in episodes]
        return torch.stack([memory for memory, _, _ in held]), np.array([steps for _, steps, _ in held], np.int64)

    def keep(self, episodes: Sequence[str], memories: Any, steps: np.ndarray) -> None:
        """Store each episode's memory after the step just answered (``steps``: what it held before it)."""
        now = self.clock()
        with self._lock:
            for episode, memory, before in zip(episodes, memories.detach(), steps):
                self._episodes[episode] = (memory.clone(), int(before) + 1, now)
                self._episodes.move_to_end(episode)
            while len(self._episodes) > self.max_episodes:
                self._episodes.popitem(last=False)
                self.forgotten += 1

    def forget(self, episode: str) -> bool:
        """End ``episode`` (its outcome said done); whether it was remembered."""
        with self._lock:
            return self._episodes.pop(episode, None) is not None

    def __contains__(self, episode: object) -> bool:
        with self._lock:
            return episode in self._episodes

    def __len__(self) -> int:
        with self._lock:
            return len(self._episodes)

    def _forget_idle(self) -> None:
        """Drop episodes idle past the timeout (the oldest come first: ``keep`` moves each touched one last)."""
        deadline = self.clock() - self.idle_timeout_s
        while self._episodes:
            _, (_, _, touched) = next(iter(self._episodes.items()))
            if touched > deadline:
                return
            self._episodes.popitem(last=False)
            self.forgotten += 1

    def prometheus(self) -> str:
        """Its gauges in Prometheus' text format (appended to the server's ``/metrics``)."""
        with self._lock:
            open_episodes = len(self._episodes)
        return "\n".join([
            "# HELP polyfuse_episode_memories episodes whose memory the served policy holds",
            "# TYPE polyfuse_episode_memories gauge", f"polyfuse_episode_memories {open_episodes}",
            "# HELP polyfuse_episode_memories_forgotten_total memories dropped before their episode's outcome "
            "(idle too long, or the oldest beyond the limit)",
            "# TYPE polyfuse_episode_memories_forgotten_total counter",
            f"polyfuse_episode_memories_forgotten_total {self.forgotten}"]) + "\n"


def waves(episodes: Sequence[str]) -> list[np.ndarray]:
    """Rows of a batch in passes where each episode appears at most once, in order: a batch that holds two
    steps of one episode (two requests answered together) takes the second from the first's memory."""
    seen: dict[str, int] = {}
    order = np.empty(len(episodes), np.int64)
    for row, episode in enumerate(episodes):
        order[row] = seen.get(episode, 0)
        seen[episode] = order[row] + 1
    return [np.flatnonzero(order == wave) for wave in range(int(order.max(initial=-1)) + 1)]
