"""PPO's clipped surrogate and its decoupled form (lagged rollouts) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from polyfuse_ppo.losses import behaviour_weights, clipped_policy_loss, decoupled_policy_loss


def test_clipped_policy_loss_value_statistics_and_gradient() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.7])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old = torch.zeros(4)
    new = ratios.log().requires_grad_(True)

    loss, stats = clipped_policy_loss(new, old, advantages, clip_range=0.2)

    # min(r A, clip(r) A): 1.2 (clipped), 0.5, -1.1, -0.8 (clipped) -> mean -0.05 -> loss 0.05
    assert loss.item() == pytest.approx(0.05)
    assert stats["clip_fraction"].item() == pytest.approx(0.75)  # |r - 1| > 0.2 for 1.5, 0.5 and 0.7
    expected_kl = sum((r - 1) - math.log(r) for r in ratios.tolist()) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl)
    loss.backward()
    # The clipped samples get no gradient; the others d/dlogp = -r A / 4.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -0.125, 0.275, 0.0]))


def test_clipped_policy_loss_at_ratio_one_is_minus_mean_advantage() -> None:
    loss, stats = clipped_policy_loss(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 2.0, 6.0]), 0.2)
    assert loss.item() == pytest.approx(-3.0)
    assert stats["approx_kl"].item() == 0.0 and stats["clip_fraction"].item() == 0.0


def test_decoupled_loss_of_an_on_policy_rollout_is_the_clipped_loss_exactly() -> None:
    behaviour = torch.tensor([-0.3, -1.2, -2.0, -0.7])
    advantages = torch.tensor([0.5, -1.0, 2.0, -0.25])
    plain_new = (behaviour + torch.tensor([0.4, -0.1, 0.05, -0.5])).requires_grad_(True)
    decoupled_new = plain_new.detach().clone().requires_grad_(True)

    weights = behaviour_weights(behaviour, behaviour, cap=1.2)  # proximal = behaviour: nothing to correct
    plain, plain_stats = clipped_policy_loss(plain_new, behaviour, advantages, 0.2)
    decoupled, decoupled_stats = decoupled_policy_loss(decoupled_new, behaviour, weights, advantages, 0.2)

    assert torch.equal(weights, torch.ones(4))
    assert torch.equal(plain, decoupled)
    assert all(torch.equal(plain_stats[key], decoupled_stats[key]) for key in plain_stats)
    plain.backward()
    decoupled.backward()
    assert torch.equal(plain_new.grad, decoupled_new.grad)


def test_decoupled_loss_clips_around_the_proximal_policy_and_weights_by_the_capped_behaviour_ratio() -> None:
    behaviour = torch.zeros(4)
    proximal = torch.tensor([1.1, 0.5, 2.0, 1.0]).log()  # pi_prox / pi_behaviour
    ratios = torch.tensor([1.5, 1.0, 1.0, 0.7])  # pi / pi_prox
    advantages = torch.tensor([1.0, 1.0, 1.0, -1.0])
    new = (proximal + ratios.log()).requires_grad_(True)

    weights = behaviour_weights(proximal, behaviour, cap=1.2)
    torch.testing.assert_close(weights, torch.tensor([1.1, 0.5, 1.2, 1.0]))  # 2.0 capped at 1.2
    torch.testing.assert_close(behaviour_weights(proximal, behaviour, cap=None), torch.tensor([1.1, 0.5, 2.0, 1.0]))
    loss, stats = decoupled_policy_loss(new, proximal, weights, advantages, clip_range=0.2)

    # min(r A, clip(r) A): 1.2 (clipped), 1.0, 1.0, -0.8 (clipped); times w: 1.32, 0.5, 1.2, -0.8 -> mean 0.555
    assert loss.item() == pytest.approx(-0.555)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)  # r = 1.5 and 0.7, not the ratios to behaviour
    expected_kl = sum((r - 1) - math.log(r) for r in ratios.tolist()) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl)
    loss.backward()
    # Clipped samples get no gradient; the others d/dlogp = -w r A / 4.
    torch.testing.assert_close(new.grad, torch.tensor([0.0, -0.125, -0.3, 0.0]))
    # The plain loss against the behaviour policy would clip differently (ratios 1.65, 0.5, 2.0, 0.7).
    plain, _ = clipped_policy_loss(new.detach(), behaviour, advantages, 0.2)
    assert plain.item() != pytest.approx(loss.item())
