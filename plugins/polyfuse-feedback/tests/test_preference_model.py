"""The preference model: Bradley–Terry loss, learning to rank on a small task, state round trip."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.rewards import RewardBatch, RunContext, Segment
from polyfuse_feedback.model import PreferenceModel, bradley_terry_loss
from polyfuse_feedback.plugin import PreferenceModelConfig, SyntheticConfig
from polyfuse_feedback.synthetic import SyntheticAnnotator


def test_bradley_terry_loss_on_a_hand_example() -> None:
    first, second = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([math.log(3.0), 0.0, 1.0])
    # P(second) = 0.75, 0.5, 0.5: targets 1 (second better), 0 (first better), 0.5 (tie)
    loss = bradley_terry_loss(first, second, torch.tensor([1.0, 0.0, 0.5]))
    assert loss.item() == pytest.approx((-math.log(0.75) + math.log(2) + math.log(2)) / 3, rel=1e-6)
    weighted = bradley_terry_loss(first, second, torch.tensor([1.0, 0.0, 0.5]), torch.tensor([2.0, 0.0, 0.0]))
    assert weighted.item() == pytest.approx(-math.log(0.75), rel=1e-6)


def bandit_segments(env: Any, rng: np.random.Generator, count: int) -> list[Segment]:
    """One-step episodes of the text bandit with random actions (reward 1 for the word's action)."""
    segments = []
    for _ in range(count):
        observation, _ = env.reset(seed=int(rng.integers(1 << 30)))
        action = int(rng.integers(env.action_space.n))
        _, reward, terminated, truncated, info = env.step(action)
        batch = {"vector": observation["vector"][None], "text": (observation["text"],)}
        segments.append(Segment(batch, np.array([action]), np.array([reward], np.float32), [info], terminated,
                                truncated, 0))
    return segments


def make_model(helpers: Any, tmp_path: Path, **params: Any) -> tuple[PreferenceModel, Any]:
    env = helpers.WordBandit(num_words=4)
    context = RunContext(env.observation_space, env.action_space,
                         lambda: helpers.make_network(env.observation_space), seed=0, run_dir=tmp_path)
    params = {"labels_per_update": 40, "gradient_steps": 30, "heldout_fraction": 0.25, **params}
    model = PreferenceModel(PreferenceModelConfig(**params), context,
                            feedback=SyntheticAnnotator(SyntheticConfig(), seed=1))
    return model, env


def pairwise_accuracy(model: PreferenceModel, segments: list[Segment]) -> float:
    """How often the model ranks two segments of different true reward the right way round."""
    batch = RewardBatch({"vector": np.concatenate([s.observations["vector"] for s in segments]),
                         "text": tuple(s.observations["text"][0] for s in segments)},
                        np.concatenate([s.actions for s in segments]), np.zeros(len(segments)),
                        np.ones(len(segments), bool), np.zeros(len(segments), bool))
    model.trained = True
    scores = model.score(batch)
    truth = np.array([s.env_rewards[0] for s in segments])
    good, bad = scores[truth == 1], scores[truth == 0]
    return float((good[:, None] > bad[None, :]).mean())


@pytest.mark.parametrize("selection", ["random", "disagreement"])
def test_the_model_learns_to_rank(selection: str, helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=400, selection=selection)
    rng = np.random.default_rng(0)
    test = bandit_segments(env, rng, 200)
    before = pairwise_accuracy(model, test)
    model.observe(bandit_segments(env, rng, 400))
    metrics = {}
    for _ in range(10):
        metrics = model.update()
    after = pairwise_accuracy(model, test)
    assert metrics["labels"] == 400 and model.asked == 400
    assert after > 0.9 and after > before + 0.2, (before, after)
    assert metrics["heldout_accuracy"] > 0.8 and metrics["loss"] < math.log(2)  # ties alone cost log 2
    assert 0 <= metrics["disagreement"] <= 0.5
    assert model.update()["labels"] == 400, "the label budget is not exceeded"


def test_state_round_trip(helpers: Any, tmp_path: Path) -> None:
    from polyfuse.rl.testing import assert_checkpointable

    model, env = make_model(helpers, tmp_path, max_labels=80)
    rng = np.random.default_rng(1)
    model.observe(bandit_segments(env, rng, 100))
    model.update()
    state = model.state_dict()
    assert_checkpointable(state)
    restored, _ = make_model(helpers, tmp_path, max_labels=80)
    restored.load_state_dict(state)
    assert len(restored.store) == len(model.store) > 0
    assert restored.store.preference == model.store.preference and restored.asked == model.asked
    test = bandit_segments(env, rng, 50)
    assert pairwise_accuracy(restored, test) == pairwise_accuracy(model, test)
    assert restored.heldout_accuracy() == model.heldout_accuracy()
    restored_rewards = restored._returns(*restored.store.segments(range(len(restored.store.actions))))
    original_rewards = model._returns(*model.store.segments(range(len(model.store.actions))))
    assert torch.allclose(restored_rewards, original_rewards)


def test_the_uncertainty_penalty_lowers_scores_by_the_ensemble_spread(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=40, uncertainty_penalty=2.0)
    rng = np.random.default_rng(2)
    model.observe(bandit_segments(env, rng, 60))
    model.update()
    segments = bandit_segments(env, rng, 20)
    batch = RewardBatch({"vector": np.concatenate([s.observations["vector"] for s in segments]),
                         "text": tuple(s.observations["text"][0] for s in segments)},
                        np.concatenate([s.actions for s in segments]), np.zeros(20), np.ones(20, bool),
                        np.zeros(20, bool))
    penalised = model.score(batch)
    with torch.no_grad():
        rewards = model._step_rewards(batch.observations, batch.actions)
    plain = (rewards.mean(0).numpy() - model.mean) / model.std
    spread = rewards.std(0, unbiased=False).numpy() / model.std
    np.testing.assert_allclose(penalised, plain - 2.0 * spread, rtol=1e-5, atol=1e-6)
    assert (spread > 0).all()


def test_the_concat_head_learns_too(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=400, head="concat")
    rng = np.random.default_rng(0)
    model.observe(bandit_segments(env, rng, 400))
    for _ in range(10):
        model.update()
    assert pairwise_accuracy(model, bandit_segments(env, rng, 200)) > 0.8
