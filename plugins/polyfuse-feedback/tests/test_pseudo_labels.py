"""SURF-style pseudo-labels (``pseudo_labels``): confident pairs only, weight and ratio applied, off by default."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.rewards import Segment
from polyfuse_feedback.plugin import PreferenceModelConfig, PseudoLabelsConfig
from polyfuse_feedback.pseudo_labels import PseudoLabeller, confident_labels, pseudo_label_loss
from pydantic import ValidationError
from test_preference_model import bandit_segments, make_model, pairwise_accuracy


def test_only_confident_pairs_are_labelled() -> None:
    # P(second) = sigmoid(logit): 0.9933, 0.0067, 0.525, 0.982 against a threshold of 0.99
    logits = torch.tensor([[5.0, -5.0, 0.1, 4.0], [0.0, -6.0, 5.0, -4.7]], requires_grad=True)
    targets, confident = confident_labels(logits, 0.99)
    assert targets.tolist() == [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
    assert confident.tolist() == [[True, True, False, False], [False, True, True, True]]
    assert not targets.requires_grad and not confident.requires_grad
    _, loose = confident_labels(logits, 0.98)
    assert loose[0].tolist() == [True, True, False, True]


def test_the_loss_counts_confident_pairs_only_averaged_over_all_drawn() -> None:
    logits = torch.tensor([[5.0, -5.0, 0.1, 0.0], [0.2, 0.0, 0.0, -6.0]], requires_grad=True)
    loss, _, _ = pseudo_label_loss(logits, 0.99)
    confident_term = math.log1p(math.exp(-5.0))  # -log sigmoid(5): a confident pair's cross-entropy
    member_losses = [2 * confident_term / 4, math.log1p(math.exp(-6.0)) / 4]
    assert loss.item() == pytest.approx(sum(member_losses), rel=1e-5)
    loss.backward()  # the gradient pushes the confident pairs further apart, and leaves the others alone
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1] and logits.grad[1, 3] > 0
    assert logits.grad[0, 2] == logits.grad[0, 3] == logits.grad[1, 0] == 0


class Fixed:
    """A stand-in for the members: fixed returns per pool segment (its env return is its index's parity)."""

    def __init__(self, returns: np.ndarray) -> None:
        self.returns = torch.as_tensor(returns, dtype=torch.float32)  # (K, pool size)
        self.calls: list[int] = []

    def __call__(self, segments: list[Segment]) -> torch.Tensor:
        self.calls.append(len(segments))
        return self.returns[:, [int(s.env_index) for s in segments]]


def pool(size: int, env_return: Any = lambda i: i % 2) -> list[Segment]:
    return [Segment({}, np.array([0]), np.array([float(env_return(i))], np.float32), [{}], True, False, i)
            for i in range(size)]


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_weight_and_ratio_are_applied(weight: float) -> None:
    # segment i is returned 6 * (i % 2): pairs of different parity are sure (P = 0.9975), same parity 0.5
    returns = np.tile(6.0 * (np.arange(8) % 2), (2, 1))
    members = Fixed(returns)
    labeller = PseudoLabeller(PseudoLabelsConfig(threshold=0.99, weight=weight, ratio=3), seed=0)
    loss = labeller.loss(pool(8), labelled=16, returns=members)  # 3 x 16 pairs drawn
    metrics = labeller.metrics()
    sure = metrics["pseudo_labels"]
    assert 0 < sure < 48 and sure == int(sure)  # both members agree on every pair: whole counts
    per_pair = math.log1p(math.exp(-6.0))
    assert loss.item() == pytest.approx(weight * 2 * sure * per_pair / 48, rel=1e-4)
    assert metrics["pseudo_label_agreement"] == 1.0 and metrics["pseudo_label_ties"] == 0  # ranked by the env reward
    assert sum(members.calls) <= 8 and labeller.metrics() == {}  # each segment once; counts start again


def test_agreement_counts_the_env_reward_ties_as_misses() -> None:
    returns = np.arange(8, dtype=float)[None] * 10.0  # every pair is sure, and ranked as by the env return ...
    labeller = PseudoLabeller(PseudoLabelsConfig(threshold=0.9, ratio=4), seed=1)
    labeller.loss(pool(8, lambda i: i // 2), labelled=50, returns=Fixed(returns))  # ... but 0 and 1 tie there
    metrics = labeller.metrics()
    assert metrics["pseudo_labels"] == 200
    assert 0.05 < metrics["pseudo_label_ties"] < 0.3  # 4 of the 28 pairs tie
    assert metrics["pseudo_label_agreement"] + metrics["pseudo_label_ties"] == pytest.approx(1.0)
    reversed_ = PseudoLabeller(PseudoLabelsConfig(threshold=0.9, ratio=4), seed=1)
    reversed_.loss(pool(8, lambda i: i // 2), labelled=50, returns=Fixed(-returns))
    assert reversed_.metrics()["pseudo_label_agreement"] == 0  # every strict pair the wrong way round
    flat = PseudoLabeller(PseudoLabelsConfig(threshold=0.9), seed=1)
    flat.loss([Segment({}, np.array([0]), np.zeros(1, np.float32), [{}], True, False, i) for i in range(8)],
              labelled=5, returns=Fixed(returns))
    assert "pseudo_label_agreement" not in flat.metrics()  # no env reward to agree with


def test_nothing_is_drawn_from_a_pool_of_one() -> None:
    labeller = PseudoLabeller(PseudoLabelsConfig(), seed=0)
    members = Fixed(np.zeros((1, 1)))
    assert labeller.loss(pool(1), labelled=8, returns=members).item() == 0 and members.calls == []


def test_off_by_default_and_inert_when_nothing_is_confident(helpers: Any, tmp_path: Path) -> None:
    assert PreferenceModelConfig().pseudo_labels is None
    off, _ = make_model(helpers, tmp_path / "off", max_labels=60, updates=2, gradient_steps=5)
    on, env = make_model(helpers, tmp_path / "on", max_labels=60, updates=2, gradient_steps=5,
                         pseudo_labels={"threshold": 1 - 1e-7})
    for model in (off, on):
        model.observe(bandit_segments(env, np.random.default_rng(0), 100))
    metrics_off, metrics_on = off.update(), on.update()
    assert not any(key.startswith("pseudo") for key in metrics_off)
    assert metrics_on["pseudo_labels"] == 0  # an untrained model is sure of nothing at 1 - 1e-7 ...
    assert metrics_on["loss"] == metrics_off["loss"]  # ... so the same queries and the same training
    for a, b in zip(off.members.parameters(), on.members.parameters()):
        assert torch.equal(a, b)


def test_pseudo_labels_train_a_model_from_few_labels(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=100, pseudo_labels={"threshold": 0.95, "ratio": 4})
    rng = np.random.default_rng(0)
    test = bandit_segments(env, rng, 200)
    model.observe(bandit_segments(env, rng, 400))
    metrics = {}
    for _ in range(10):
        metrics = model.update()
    assert metrics["labels"] == 100 and model.router.asked() == 100  # pseudo-labels are never stored or asked
    assert metrics["pseudo_labels"] > 0 and metrics["pseudo_label_agreement"] > 0.8
    assert pairwise_accuracy(model, test) > 0.9
    state = model.state_dict()
    restored, _ = make_model(helpers, tmp_path, max_labels=100, pseudo_labels={"threshold": 0.95, "ratio": 4})
    restored.load_state_dict(state)
    assert restored.pseudo.rng.bit_generator.state == model.pseudo.rng.bit_generator.state


@pytest.mark.parametrize(("params", "message"), [
    ({"threshold": 0.5}, "pseudo_labels.threshold"),
    ({"threshold": 1.0}, "pseudo_labels.threshold"),
    ({"ratio": 0}, "pseudo_labels.ratio"),
    ({"weight": 0}, "pseudo_labels.weight"),
    ({"tau": 0.9}, "pseudo_labels.tau"),
])
def test_config_errors_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        PreferenceModelConfig(pseudo_labels=params)
    located = [".".join(str(p) for p in e["loc"]) for e in error.value.errors()]
    assert message in located, located
