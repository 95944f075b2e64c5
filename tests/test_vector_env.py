"""TrackedVectorEnv: environment rewards and steps counted, episodes recorded, segments cut for rewards that learn."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.envs import DIGITS_VQA_ID
from polyfuse.envs import make_vector_env as make_env_vector
from polyfuse.rewards import Segment
from polyfuse.rl.testing import make_vector_env
from polyfuse.training import TrackedVectorEnv
from polyfuse.training.replay import ReplayableSegment


def play(envs: TrackedVectorEnv, steps: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random presses; returns each step's (actions, env rewards, dones)."""
    rng = np.random.default_rng(seed)
    envs.reset()
    history = []
    for _ in range(steps):
        actions = rng.integers(0, 3, envs.num_envs)
        _, rewards, terminated, truncated, _ = envs.step(actions)
        history.append((actions, rewards, terminated | truncated))
    return history


def test_whole_episodes_reach_a_learning_reward_step_for_step() -> None:
    envs = TrackedVectorEnv(make_vector_env("chain", num_envs=3, length=2, max_steps=4), segment_length=0)
    history = play(envs, 20)
    segments = envs.pop_segments()
    episodes = envs.pop_episodes()
    assert len(segments) == len(episodes) == sum(int(done.sum()) for _, _, done in history)
    assert envs.env_steps == 20 * 3
    for segment in segments:
        assert 1 <= len(segment) <= 4 and segment.terminated != segment.truncated
        assert len(segment.observations["text"]) == len(segment) == len(segment.infos)
        assert segment.observations["vector"].shape == (len(segment), 3)
        assert segment.env_rewards.sum() == float(segment.terminated), "reward 1 exactly when the goal is reached"
    # Segments of one env, in order, replay that env's actions.
    env0 = [segment for segment in segments if segment.env_index == 0]
    replayed = np.concatenate([segment.actions for segment in env0])
    assert np.array_equal(replayed, np.array([actions[0] for actions, _, _ in history])[: len(replayed)])
    assert [e.length for e in episodes if e.success] and all(e.episode_return in (0.0, 1.0) for e in episodes)


def test_fragments_have_the_asked_length_and_drop_short_tails() -> None:
    envs = TrackedVectorEnv(make_vector_env("chain", num_envs=2, length=3, max_steps=6), segment_length=2)
    play(envs, 30)
    segments = envs.pop_segments()
    assert segments and all(len(segment) == 2 for segment in segments)
    assert any(segment.terminated or segment.truncated for segment in segments), "an episode's last fragment"
    assert any(not (segment.terminated or segment.truncated) for segment in segments), "fragments mid-episode"
    assert envs.pop_segments() == []


def test_no_segments_are_recorded_unless_asked() -> None:
    envs = TrackedVectorEnv(make_vector_env("chain", num_envs=2))
    play(envs, 10)
    assert envs.pop_segments() == [] and envs.env_steps == 20


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_digits_vqa_segments_replay_other_answers_without_touching_the_training_envs(vectorization: str) -> None:
    def tracked() -> TrackedVectorEnv:
        envs = TrackedVectorEnv(make_env_vector(DIGITS_VQA_ID, {}, num_envs=4, vectorization=vectorization, seed=0),
                                segment_length=0)
        envs.reset(seed=3)
        return envs

    envs, untouched = tracked(), tracked()
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = rng.integers(0, 12, 4)
        observations, *_ = envs.step(actions)
        for segment in envs.pop_segments():
            assert isinstance(segment, ReplayableSegment)
            answer = int(segment.infos[0]["expert_action"])
            for action in range(12):  # every answer's outcome, from the environment restored to the context
                other = segment.replay([action])
                assert other.env_rewards.tolist() == [float(action == answer)] and other.terminated
                assert other.observations["question"] == segment.observations["question"]
                np.testing.assert_array_equal(other.observations["image"], segment.observations["image"])
        expected, *_ = untouched.step(actions)
        assert observations["question"] == expected["question"], "replays leave the training episodes alone"
        np.testing.assert_array_equal(observations["image"], expected["image"])


def test_fragments_of_a_sequential_env_are_plain_segments_without_the_state_protocol() -> None:
    envs = TrackedVectorEnv(make_vector_env("chain", num_envs=2), segment_length=1)
    play(envs, 3)
    assert {type(segment) for segment in envs.pop_segments()} == {Segment}
