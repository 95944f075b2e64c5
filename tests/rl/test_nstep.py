"""n-step returns against hand-computed values, episode ends inside the window, and resumed runs."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.rl.nstep import NStepAccumulator

GAMMA = 0.5


def observations(step: int, num_envs: int = 2) -> dict:
    """Env ``e`` at step ``step``: vector [step, e], text "s<step> e<e>"."""
    return {
        "vector": np.array([[step, env] for env in range(num_envs)], dtype=np.float32),
        "text": tuple(f"s{step} e{env}" for env in range(num_envs)),
    }


def final(step: int, num_envs: int = 2) -> dict:
    """Final observations (distinct from any reset observation)."""
    batch = observations(step, num_envs)
    return {"vector": batch["vector"] + 100, "text": tuple(f"final {t}" for t in batch["text"])}


def rows(transitions) -> list[tuple]:
    """(step, env, action, reward, next text, terminated, horizon) per transition (truncated: see cut())."""
    if transitions is None:
        return []
    return [
        (int(transitions.observations["vector"][i, 0]), int(transitions.observations["vector"][i, 1]),
         int(transitions.actions[i]), round(float(transitions.rewards[i]), 6),
         transitions.next_observations["text"][i], bool(transitions.terminated[i]),
         int(transitions.horizons[i]))
        for i in range(len(transitions))
    ]


def test_three_step_returns_with_termination_and_truncation() -> None:
    """Rewards 1, 2, 4, 8 in both envs; at the fourth step env 0 terminates and env 1 is truncated."""
    accumulator = NStepAccumulator(3, GAMMA, num_envs=2)
    rewards = [1.0, 2.0, 4.0, 8.0]
    no, yes = np.array([False, False]), np.array([True, False])
    out = []
    for step in range(3):
        actions = np.array([step, 10 + step])
        out.append(rows(accumulator.push(observations(step), actions, np.full(2, rewards[step]),
                                         no, no, observations(step + 1))))
    assert out[0] == out[1] == []
    # 1 + 0.5 * 2 + 0.25 * 4 = 3, bootstrapped from the observation 3 steps later
    assert out[2] == [(0, 0, 0, 3.0, "s3 e0", False, 3), (0, 1, 10, 3.0, "s3 e1", False, 3)]
    assert accumulator.pending_count == 4

    ended = rows(accumulator.push(observations(3), np.array([3, 13]), np.full(2, 8.0),
                                  terminated=yes, truncated=~yes, next_observations=final(4)))
    assert ended == [
        # env 0 terminated: every pending step is closed, none bootstraps
        (1, 0, 1, 6.0, "final s4 e0", True, 3),  # 2 + 0.5 * 4 + 0.25 * 8
        (2, 0, 2, 8.0, "final s4 e0", True, 2),  # 4 + 0.5 * 8
        (3, 0, 3, 8.0, "final s4 e0", True, 1),
        # env 1 truncated: the same returns, but they bootstrap from the final observation
        (1, 1, 11, 6.0, "final s4 e1", False, 3),
        (2, 1, 12, 8.0, "final s4 e1", False, 2),
        (3, 1, 13, 8.0, "final s4 e1", False, 1),
    ]
    assert accumulator.pending_count == 0
    closed = accumulator.push(observations(4), np.array([4, 14]), np.zeros(2), no, no, observations(5))
    assert closed is None  # the new episodes start from scratch


def test_transitions_say_whether_the_episode_was_cut_where_they_end() -> None:
    """Truncated: cut by a time limit (or a resume) where the transition ends; never when it terminated."""
    accumulator = NStepAccumulator(2, GAMMA, num_envs=2)
    no = np.array([False, False])
    assert accumulator.push(observations(0), np.array([0, 10]), np.ones(2), no, no, observations(1)) is None
    completed = accumulator.push(observations(1), np.array([1, 11]), np.ones(2), no, no, observations(2))
    assert completed.truncated.tolist() == [False, False]  # full windows inside running episodes
    ended = accumulator.push(observations(2), np.array([2, 12]), np.ones(2), np.array([True, False]),
                             np.array([True, True]), final(3))
    assert ended.terminated.tolist() == [True, True, False, False]
    assert ended.truncated.tolist() == [False, False, True, True]
    np.testing.assert_allclose(ended.bootstrap_discounts(GAMMA), [0, 0, 0.25, 0.5])
    one_step = NStepAccumulator(1, GAMMA, num_envs=2).push(
        observations(0), np.array([0, 1]), np.ones(2), np.array([True, False]), np.array([True, True]), final(1))
    assert one_step.truncated.tolist() == [False, True]


def test_terminated_and_truncated_together_counts_as_terminated() -> None:
    accumulator = NStepAccumulator(2, GAMMA, num_envs=1)
    out = rows(accumulator.push(observations(0, 1), np.array([1]), np.array([5.0]),
                                np.array([True]), np.array([True]), final(1, 1)))
    assert out == [(0, 0, 1, 5.0, "final s1 e0", True, 1)]


def test_an_episode_shorter_than_n_and_a_new_one_after_it() -> None:
    accumulator = NStepAccumulator(4, GAMMA, num_envs=1)
    no, yes = np.array([False]), np.array([True])
    first = accumulator.push(observations(0, 1), np.array([0]), np.array([1.0]), no, no, observations(1, 1))
    assert first is None
    out = rows(accumulator.push(observations(1, 1), np.array([1]), np.array([2.0]), yes, no, final(2, 1)))
    assert out == [(0, 0, 0, 2.0, "final s2 e0", True, 2), (1, 0, 1, 2.0, "final s2 e0", True, 1)]
    # the next episode starts from scratch: its first step needs 4 steps of its own
    for step in range(2, 5):
        assert accumulator.push(observations(step, 1), np.array([step]), np.array([1.0]), no, no,
                                observations(step + 1, 1)) is None
    out = rows(accumulator.push(observations(5, 1), np.array([5]), np.array([1.0]), no, no,
                                observations(6, 1)))
    assert out == [(2, 0, 2, 1.875, "s6 e0", False, 4)]  # 1 + 0.5 + 0.25 + 0.125


def test_one_step_is_the_plain_transition() -> None:
    accumulator = NStepAccumulator(1, 0.99, num_envs=2)
    out = rows(accumulator.push(observations(7), np.array([1, 2]), np.array([0.5, -1.0]),
                                np.array([False, True]), np.array([False, False]), final(8)))
    assert out == [(7, 0, 1, 0.5, "final s8 e0", False, 1), (7, 1, 2, -1.0, "final s8 e1", True, 1)]
    assert accumulator.pending_count == 0


def test_pending_steps_of_a_saved_run_are_closed_as_truncated() -> None:
    accumulator = NStepAccumulator(3, GAMMA, num_envs=2)
    no = np.array([False, False])
    accumulator.push(observations(0), np.array([0, 10]), np.array([1.0, 3.0]), no, no, observations(1))
    accumulator.push(observations(1), np.array([1, 11]), np.array([2.0, 4.0]), no, no, observations(2))
    state = accumulator.state_dict()
    resumed = NStepAccumulator(3, GAMMA, num_envs=2)
    closed = rows(resumed.close_saved(state, observations(2)))
    assert sorted(closed) == sorted([
        (0, 0, 0, 2.0, "s2 e0", False, 2),  # 1 + 0.5 * 2, bootstrapped from the observation at save time
        (1, 0, 1, 2.0, "s2 e0", False, 1),
        (0, 1, 10, 5.0, "s2 e1", False, 2),  # 3 + 0.5 * 4
        (1, 1, 11, 4.0, "s2 e1", False, 1),
    ])
    assert resumed.pending_count == 0
    nothing_pending = NStepAccumulator(3, GAMMA, 2).state_dict()
    assert NStepAccumulator(3, GAMMA, 2).close_saved(nothing_pending, observations(0)) is None


def test_wrong_number_of_envs_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 3 environments"):
        NStepAccumulator(2, GAMMA, 3).push(observations(0), np.zeros(2), np.zeros(2),
                                           np.zeros(2, bool), np.zeros(2, bool), observations(1))
