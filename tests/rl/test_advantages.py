"""GAE, advantage normalisation and the value loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from polyfuse.rl.advantages import compute_gae, explained_variance, normalize, value_loss

GAMMA, LAMBDA = 0.9, 0.8


def test_gae_matches_hand_computation_with_termination_and_truncation() -> None:
    # Env 0 terminates at t=1; env 1 is truncated at t=0 with V(final obs) = 2.0.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    values = torch.tensor([[0.5, 0.3], [1.0, 0.6], [0.2, 0.9]])
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, True], [False, False], [False, False]])
    last_values = torch.tensor([0.4, 1.5])
    # Only [0, 1] (truncated, not terminated) may be read; the 99s must be ignored.
    final_values = torch.tensor([[99.0, 2.0], [99.0, 99.0], [99.0, 99.0]])

    advantages, returns = compute_gae(
        rewards, values, terminated, truncated, last_values, final_values, GAMMA, LAMBDA
    )

    # env 0: t=2 bootstraps from last_values; t=1 terminates (V(next) = 0, chain cut); t=0 chains into t=1.
    a02 = 2.0 + 0.9 * 0.4 - 0.2  # 2.16
    a01 = 0.0 + 0.0 - 1.0  # -1.0
    a00 = (1.0 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * a01  # 1.4 - 0.72 = 0.68
    # env 1: t=2 from last_values; t=1 chains into t=2; t=0 is truncated: bootstrap from V(final) = 2.0, chain cut.
    a12 = 0.0 + 0.9 * 1.5 - 0.9  # 0.45
    a11 = (1.0 + 0.9 * 0.9 - 0.6) + 0.9 * 0.8 * a12  # 1.21 + 0.324 = 1.534
    a10 = 0.0 + 0.9 * 2.0 - 0.3  # 1.5
    expected = torch.tensor([[a00, a10], [a01, a11], [a02, a12]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


def test_gae_termination_wins_over_truncation() -> None:
    ended = torch.tensor([[True]])
    advantages, _ = compute_gae(
        torch.tensor([[1.0]]), torch.tensor([[0.25]]), ended, ended, torch.tensor([5.0]), torch.tensor([[7.0]]),
        GAMMA, LAMBDA,
    )
    torch.testing.assert_close(advantages, torch.tensor([[0.75]]))  # 1 + 0 - 0.25: no bootstrap at all


def test_gae_with_lambda_one_is_monte_carlo_return_minus_value() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.1], [0.2], [0.3]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, no, no, torch.tensor([4.0]), torch.zeros(3, 1), 0.5, 1.0)
    expected_returns = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4], [2 + 0.5 * 3 + 0.25 * 4], [3 + 0.5 * 4]])
    torch.testing.assert_close(returns, expected_returns)
    torch.testing.assert_close(advantages, expected_returns - values)


def test_value_loss_plain_and_clipped() -> None:
    values, old, returns = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert value_loss(values, returns).item() == pytest.approx(0.5)  # 0.5 * (1 - 2)^2
    # clipped value 0 + clamp(1, -0.5, 0.5) = 0.5 -> (0.5 - 2)^2 = 2.25 > 1: the pessimistic max wins
    assert value_loss(values, returns, old, 0.5).item() == pytest.approx(1.125)
    # within the clip range the two agree
    assert value_loss(torch.tensor([0.2]), returns, old, 0.5).item() == pytest.approx(0.5 * 1.8**2)


def test_normalize_and_explained_variance() -> None:
    normalized = normalize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert normalized.std().item() == pytest.approx(1.0, abs=1e-5)
    assert normalize(torch.tensor([5.0])).item() == 0.0
    targets = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(targets, targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), 2.0), targets) == pytest.approx(0.0)
    assert math.isnan(explained_variance(targets, torch.ones(3)))
