"""PPO's maths against hand computations: GAE, the clipped losses, categorical helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from polyfuse_ppo import functional as PF

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

    advantages, returns = PF.compute_gae(
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
    advantages, _ = PF.compute_gae(
        torch.tensor([[1.0]]), torch.tensor([[0.25]]), ended, ended, torch.tensor([5.0]), torch.tensor([[7.0]]),
        GAMMA, LAMBDA,
    )
    torch.testing.assert_close(advantages, torch.tensor([[0.75]]))  # 1 + 0 - 0.25: no bootstrap at all


def test_gae_with_lambda_one_is_monte_carlo_return_minus_value() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.1], [0.2], [0.3]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    advantages, returns = PF.compute_gae(rewards, values, no, no, torch.tensor([4.0]), torch.zeros(3, 1), 0.5, 1.0)
    expected_returns = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4], [2 + 0.5 * 3 + 0.25 * 4], [3 + 0.5 * 4]])
    torch.testing.assert_close(returns, expected_returns)
    torch.testing.assert_close(advantages, expected_returns - values)


def test_clipped_policy_loss_value_statistics_and_gradient() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old = torch.zeros(4)
    new = ratios.log().requires_grad_(True)

    loss, stats = PF.clipped_policy_loss(new, old, advantages, clip_range=0.2)

    # min(r A, clip(r) A): 1.2 (clipped), 0.5, -1.1, -0.8 (clipped) -> mean -0.05 -> loss 0.05
    assert loss.item() == pytest.approx(0.05)
    assert stats["clip_fraction"].item() == pytest.approx(0.75)  # |r - 1| > 0.2 for 1.5, 0.5 and 0.7
    expected_kl = sum((r - 1) - math.log(r) for r in ratios.tolist()) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl)
    loss.backward()
    # The clipped samples get no gradient; the others d/dlogp = -r A / 4.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -0.125, 0.275, 0.0]))


def test_clipped_policy_loss_at_ratio_one_is_minus_mean_advantage() -> None:
    loss, stats = PF.clipped_policy_loss(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 2.0, 6.0]), 0.2)
    assert loss.item() == pytest.approx(-3.0)
    assert stats["approx_kl"].item() == 0.0 and stats["clip_fraction"].item() == 0.0


def test_value_loss_plain_and_clipped() -> None:
    values, old, returns = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert PF.value_loss(values, old, returns, None).item() == pytest.approx(0.5)  # 0.5 * (1 - 2)^2
    # clipped value 0 + clamp(1, -0.5, 0.5) = 0.5 -> (0.5 - 2)^2 = 2.25 > 1: the pessimistic max wins
    assert PF.value_loss(values, old, returns, 0.5).item() == pytest.approx(1.125)
    # within the clip range the two agree
    assert PF.value_loss(torch.tensor([0.2]), old, returns, 0.5).item() == pytest.approx(0.5 * 1.8**2)


def test_normalize_and_explained_variance() -> None:
    normalized = PF.normalize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert normalized.std().item() == pytest.approx(1.0, abs=1e-5)
    assert PF.normalize(torch.tensor([5.0])).item() == 0.0
    targets = torch.tensor([1.0, 2.0, 3.0])
    assert PF.explained_variance(targets, targets) == pytest.approx(1.0)
    assert PF.explained_variance(torch.full((3,), 2.0), targets) == pytest.approx(0.0)
    assert math.isnan(PF.explained_variance(targets, torch.ones(3)))


def test_categorical_helpers_match_torch_distributions_for_multi_discrete() -> None:
    generator = torch.Generator().manual_seed(0)
    nvec = (3, 2)
    logits = torch.randn(5, 5, generator=generator)
    q_logits = torch.randn(5, 5, generator=generator)
    actions = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1], [0, 0]])
    first, second = Categorical(logits=logits[:, :3]), Categorical(logits=logits[:, 3:])
    q_first, q_second = Categorical(logits=q_logits[:, :3]), Categorical(logits=q_logits[:, 3:])

    torch.testing.assert_close(
        PF.log_prob(logits, actions, nvec), first.log_prob(actions[:, 0]) + second.log_prob(actions[:, 1])
    )
    torch.testing.assert_close(PF.entropy(logits, nvec), first.entropy() + second.entropy())
    torch.testing.assert_close(
        PF.kl_divergence(logits, q_logits, nvec), kl_divergence(first, q_first) + kl_divergence(second, q_second)
    )
    assert torch.equal(PF.mode(logits, nvec), torch.stack([logits[:, :3].argmax(1), logits[:, 3:].argmax(1)], 1))
    with pytest.raises(ValueError, match="expected 5 logits"):
        PF.log_prob(logits[:, :4], actions, nvec)


def test_kl_is_zero_for_identical_policies_and_known_for_a_coin() -> None:
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1]]).log()
    assert PF.kl_divergence(p, p, (2,)).item() == pytest.approx(0.0, abs=1e-7)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert PF.kl_divergence(p, q, (2,)).item() == pytest.approx(expected, rel=1e-5)


def test_sampling_follows_the_generator_and_the_probabilities() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0]]).expand(4000, 3)
    first = PF.sample(logits, (3,), torch.Generator().manual_seed(7))
    again = PF.sample(logits, (3,), torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    frequencies = torch.bincount(first[:, 0], minlength=3).float() / 4000
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], 0), atol=0.03, rtol=0)
