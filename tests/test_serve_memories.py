"""The served policy's episode memories on their own: new, continued, forgotten (done, idle, beyond the limit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from polyfuse.serving.memories import EpisodeMemories, waves


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_unknown_episode_starts_from_zeros_and_a_kept_one_continues() -> None:
    memories = EpisodeMemories(3)
    memory, held = memories.recall(["a", "b"])
    assert torch.equal(memory, torch.zeros(2, 3)) and held.tolist() == [0, 0]
    memories.keep(["a", "b"], torch.tensor([[1.0, 2, 3], [4, 5, 6]]), held)
    memory, held = memories.recall(["b", "c"])
    assert memory.tolist() == [[4, 5, 6], [0, 0, 0]] and held.tolist() == [1, 0]
    assert len(memories) == 2 and "a" in memories and "c" not in memories
    assert memories.forget("a") and not memories.forget("a") and len(memories) == 1


def test_kept_memories_are_copies() -> None:
    memories = EpisodeMemories(2)
    given = torch.ones(1, 2)
    memories.keep(["a"], given, np.zeros(1, np.int64))
    given.zero_()
    assert memories.recall(["a"])[0].tolist() == [[1.0, 1.0]]


def test_idle_episodes_and_the_oldest_beyond_the_limit_are_forgotten() -> None:
    clock = Clock()
    memories = EpisodeMemories(1, max_episodes=2, idle_timeout_s=10.0, clock=clock)
    one = torch.ones(1, 1)
    memories.keep(["a"], one, np.zeros(1, np.int64))
    clock.now = 5.0
    memories.keep(["b"], one, np.zeros(1, np.int64))
    clock.now = 12.0  # "a" idle for 12 s, "b" for 7 s
    assert memories.recall(["a", "b"])[1].tolist() == [0, 1]
    assert memories.forgotten == 1
    memories.keep(["c"], one, np.zeros(1, np.int64))
    memories.keep(["d"], one, np.zeros(1, np.int64))  # three remembered, limit two: "b", the oldest, goes
    assert "b" not in memories and len(memories) == 2 and memories.forgotten == 2
    assert "polyfuse_episode_memories 2" in memories.prometheus()
    assert "polyfuse_episode_memories_forgotten_total 2" in memories.prometheus()


def test_waves_put_each_episode_at_most_once_per_pass_in_order() -> None:
    assert [w.tolist() for w in waves(["a", "b", "a", "c", "a", "b"])] == [[0, 1, 3], [2, 5], [4]]
    assert [w.tolist() for w in waves(["a", "b"])] == [[0, 1]]
    assert waves([]) == []


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_episodes must be positive"):
        EpisodeMemories(4, max_episodes=0)
