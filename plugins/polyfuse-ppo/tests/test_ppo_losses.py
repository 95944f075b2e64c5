"""PPO's clipped surrogate against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from polyfuse_ppo.losses import clipped_policy_loss


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
