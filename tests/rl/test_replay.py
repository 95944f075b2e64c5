"""The replay buffer: circular overwriting, mixed numeric/text observations, seeded sampling, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.rl.replay import ReplayBuffer, Transitions
from polyfuse.rl.rng import generator_state, set_generator_state
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint


def transitions(first: int, count: int) -> Transitions:
    """Transitions numbered ``first..first+count-1``; every field encodes the number."""
    ids = np.arange(first, first + count)
    observations = {
        "image": np.stack([np.full((2, 2), i % 256, dtype=np.uint8) for i in ids]),
        "vector": ids[:, None].astype(np.float32) * np.ones((1, 3), dtype=np.float32),
        "text": tuple(f"step number {i}" for i in ids),  # as gymnasium's vector envs give Text
        "label": np.array([f"label {i}" for i in ids], dtype=object),  # as warm-start data gives text
    }
    next_observations = {
        "image": observations["image"] + 1,
        "vector": observations["vector"] + 0.5,
        "text": tuple(f"after {i}" for i in ids),
        "label": np.array([f"next label {i}" for i in ids]),  # a <U array works as well
    }
    return Transitions(
        observations=observations,
        actions=ids.astype(np.int64),
        rewards=ids.astype(np.float32) / 10,
        next_observations=next_observations,
        terminated=ids % 2 == 0,
        truncated=ids % 5 == 1,
        horizons=np.ones(count, dtype=np.int64) + ids % 3,
    )


def stored_ids(buffer: ReplayBuffer) -> list[int]:
    return buffer.gather(np.arange(len(buffer))).actions.tolist()


def test_wraps_around_overwriting_the_oldest() -> None:
    buffer = ReplayBuffer(5, np.random.default_rng(0))
    buffer.add(transitions(0, 3))
    assert (len(buffer), buffer.position, stored_ids(buffer)) == (3, 3, [0, 1, 2])
    buffer.add(transitions(3, 4))
    assert (len(buffer), buffer.position) == (5, 2)
    assert stored_ids(buffer) == [5, 6, 2, 3, 4]
    batch = buffer.gather(np.arange(5))
    assert batch.observations["text"] == tuple(f"step number {i}" for i in [5, 6, 2, 3, 4])
    assert batch.next_observations["image"][:, 0, 0].tolist() == [6, 7, 3, 4, 5]


def test_a_batch_larger_than_the_capacity_keeps_the_newest() -> None:
    buffer = ReplayBuffer(4, np.random.default_rng(0))
    buffer.add(transitions(0, 2))
    buffer.add(transitions(2, 7))
    assert len(buffer) == 4 and sorted(stored_ids(buffer)) == [5, 6, 7, 8]
    buffer.add(transitions(9, 1))
    assert sorted(stored_ids(buffer)) == [6, 7, 8, 9]


def test_mixed_modalities_come_back_as_they_went_in() -> None:
    buffer = ReplayBuffer(10, np.random.default_rng(0))
    buffer.add(transitions(0, 6))
    batch = buffer.gather(np.array([4, 1, 4]))
    assert batch.observations["image"].dtype == np.uint8 and batch.observations["image"].shape == (3, 2, 2)
    assert batch.observations["image"][:, 0, 0].tolist() == [4, 1, 4]
    assert batch.observations["vector"].dtype == np.float32 and batch.observations["vector"].shape == (3, 3)
    assert batch.observations["text"] == ("step number 4", "step number 1", "step number 4")
    assert batch.observations["label"] == ("label 4", "label 1", "label 4")
    assert all(type(text) is str for text in batch.observations["label"])
    assert batch.next_observations["text"] == ("after 4", "after 1", "after 4")
    assert batch.next_observations["image"][:, 0, 0].tolist() == [5, 2, 5]
    np.testing.assert_allclose(batch.next_observations["vector"][:, 0], [4.5, 1.5, 4.5])
    np.testing.assert_allclose(batch.rewards, [0.4, 0.1, 0.4])
    assert batch.terminated.tolist() == [True, False, True]
    assert batch.truncated.tolist() == [False, True, False]
    assert batch.horizons.tolist() == [2, 2, 2]


def test_samples_are_copies() -> None:
    buffer = ReplayBuffer(10, np.random.default_rng(0))
    buffer.add(transitions(0, 3))
    batch = buffer.sample(4)
    batch.observations["image"][:] = 99
    assert buffer.gather(np.arange(3)).observations["image"].max() < 99


def test_sampling_is_determined_by_the_generator() -> None:
    def draws(seed: int) -> list[list[int]]:
        buffer = ReplayBuffer(50, np.random.default_rng(seed))
        buffer.add(transitions(0, 40))
        return [buffer.sample(8).actions.tolist() for _ in range(3)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert all(0 <= i < 40 for batch in draws(3) for i in batch)


def test_state_round_trip_through_a_checkpoint_keeps_contents_and_sampling(tmp_path) -> None:
    """The buffer's state and its generator's (checkpointed by the buffer's owner) restore sampling exactly."""
    buffer = ReplayBuffer(8, np.random.default_rng(3))
    buffer.add(transitions(0, 6))
    buffer.add(transitions(6, 5))  # wrapped: position 3
    buffer.sample(5)
    save_checkpoint(tmp_path, {"replay": buffer.state_dict(), "rng": generator_state(buffer.rng)})
    restored = ReplayBuffer(8, np.random.default_rng(999))
    saved = load_checkpoint(tmp_path / "checkpoint")
    restored.load_state_dict(saved["replay"])
    set_generator_state(restored.rng, saved["rng"])
    assert (restored.position, len(restored)) == (buffer.position, len(buffer)) == (3, 8)
    for expected, got in zip((buffer.sample(16) for _ in range(3)), (restored.sample(16) for _ in range(3))):
        assert got.actions.tolist() == expected.actions.tolist()
        assert got.observations["text"] == expected.observations["text"]
        assert got.observations["label"] == expected.observations["label"]
        np.testing.assert_array_equal(got.observations["image"], expected.observations["image"])
        np.testing.assert_array_equal(got.next_observations["vector"], expected.next_observations["vector"])
        np.testing.assert_array_equal(got.terminated, expected.terminated)
        np.testing.assert_array_equal(got.truncated, expected.truncated)
        np.testing.assert_array_equal(got.horizons, expected.horizons)
    buffer.add(transitions(11, 2))
    restored.add(transitions(11, 2))
    assert stored_ids(restored) == stored_ids(buffer)  # the write position came back too


def test_loading_into_a_smaller_buffer_keeps_the_newest() -> None:
    buffer = ReplayBuffer(6, np.random.default_rng(0))
    buffer.add(transitions(0, 9))
    smaller = ReplayBuffer(4, np.random.default_rng(0))
    smaller.load_state_dict(buffer.state_dict())
    assert sorted(stored_ids(smaller)) == [5, 6, 7, 8]
    assert smaller.gather(np.array([stored_ids(smaller).index(8)])).observations["text"] == ("step number 8",)


def test_an_empty_buffer_round_trips_and_refuses_to_sample() -> None:
    buffer = ReplayBuffer(4, np.random.default_rng(0))
    restored = ReplayBuffer(4, np.random.default_rng(1))
    restored.load_state_dict(buffer.state_dict())
    assert len(restored) == 0
    with pytest.raises(ValueError, match="empty"):
        restored.sample(2)


def test_observation_keys_must_not_change() -> None:
    buffer = ReplayBuffer(4, np.random.default_rng(0))
    buffer.add(transitions(0, 2))
    other = transitions(2, 1)
    del other.observations["label"], other.next_observations["label"]
    with pytest.raises(ValueError, match="observation keys changed"):
        buffer.add(other)


def test_actions_keep_their_shape_and_dtype() -> None:
    """Multi-dimensional or float actions are stored as given (off-policy learners for any action space)."""
    batch = transitions(0, 3)
    batch.actions = np.array([[0.5, -1.0], [0.25, 0.0], [1.0, 1.0]], dtype=np.float32)
    buffer = ReplayBuffer(4, np.random.default_rng(0))
    buffer.add(batch)
    stored = buffer.gather(np.arange(3)).actions
    assert stored.dtype == np.float32 and stored.tolist() == batch.actions.tolist()


def test_bootstrap_discounts_are_gamma_to_the_horizon_unless_terminated() -> None:
    batch = transitions(0, 4)  # horizons 1, 2, 3, 1; terminated at 0 and 2
    np.testing.assert_allclose(batch.bootstrap_discounts(0.5), [0.0, 0.25, 0.0, 0.5])
