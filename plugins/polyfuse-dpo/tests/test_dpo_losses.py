"""The preference losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from polyfuse_dpo.losses import (
    action_log_probs,
    implicit_rewards,
    preference_logits,
    preference_loss,
)


def test_action_log_probs_at_known_logits() -> None:
    # logits (0, log 2, log 5): probabilities 1/8, 2/8, 5/8
    logits = torch.tensor([[0.0, math.log(2), math.log(5)], [0.0, 0.0, 0.0]])
    got = action_log_probs(logits, torch.tensor([2, 1]))
    assert torch.allclose(got, torch.tensor([math.log(5 / 8), math.log(1 / 3)]))


def test_preference_logit_by_hand() -> None:
    # policy: pi(a_w) = 1/2, pi(a_l) = 1/8; reference: 1/4 each; beta = 0.5
    # h = 0.5 * [(log 1/2 - log 1/4) - (log 1/8 - log 1/4)] = 0.5 * (log 2 + log 2) = log 2
    h = preference_logits(torch.tensor([math.log(1 / 2)]), torch.tensor([math.log(1 / 8)]),
                          torch.tensor([math.log(1 / 4)]), torch.tensor([math.log(1 / 4)]), beta=0.5)
    assert h.item() == pytest.approx(math.log(2))
    assert implicit_rewards(torch.tensor(math.log(1 / 2)), torch.tensor(math.log(1 / 4)), 0.5).item() == \
        pytest.approx(0.5 * math.log(2))


def test_dpo_loss_by_hand() -> None:
    # -log sigmoid(log 2) = -log(2 / 3) = log 1.5; at h = 0: log 2; sigmoid(-log 2) = 1/3 -> log 3
    h = torch.tensor([math.log(2), 0.0, -math.log(2)])
    assert torch.allclose(preference_loss(h, beta=0.5), torch.tensor([math.log(1.5), math.log(2), math.log(3)]))


def test_dpo_loss_from_the_policy_and_reference_logits_end_to_end() -> None:
    # three actions; policy logits (log 4, log 2, log 2): pi = (1/2, 1/4, 1/4); uniform reference (1/3 each)
    # a_w = 0, a_l = 2, beta = 1: h = (log 1/2 - log 1/3) - (log 1/4 - log 1/3) = log 2
    policy, reference = torch.tensor([[math.log(4), math.log(2), math.log(2)]]), torch.zeros(1, 3)
    chosen, rejected = torch.tensor([0]), torch.tensor([2])
    h = preference_logits(action_log_probs(policy, chosen), action_log_probs(policy, rejected),
                          action_log_probs(reference, chosen), action_log_probs(reference, rejected), beta=1.0)
    assert h.item() == pytest.approx(math.log(2))
    assert preference_loss(h, 1.0).item() == pytest.approx(math.log(1.5))


def test_the_policy_equal_to_its_reference_gives_h_zero_whatever_it_prefers() -> None:
    logits = torch.tensor([[3.0, -1.0, 0.5]])
    chosen, rejected = torch.tensor([1]), torch.tensor([0])
    log_w, log_l = action_log_probs(logits, chosen), action_log_probs(logits, rejected)
    h = preference_logits(log_w, log_l, log_w, log_l, beta=0.3)
    assert h.item() == 0.0
    assert preference_loss(h, 0.3).item() == pytest.approx(math.log(2))


def test_conservative_with_no_smoothing_is_dpo() -> None:
    h = torch.linspace(-8, 8, 33)
    assert torch.allclose(preference_loss(h, 0.1, "conservative", 0.0), preference_loss(h, 0.1, "dpo"))


def test_conservative_by_hand_and_its_finite_minimiser() -> None:
    # e = 0.25 at h = log 2: -(0.75) log(2/3) - 0.25 log(1/3)
    h = torch.tensor([math.log(2)])
    expected = -0.75 * math.log(2 / 3) - 0.25 * math.log(1 / 3)
    assert preference_loss(h, 0.5, "conservative", 0.25).item() == pytest.approx(expected)
    # the minimiser is h* = log((1 - e) / e) = log 3, where the derivative -(1-e) sigmoid(-h) + e sigmoid(h) is 0
    grid = torch.linspace(-5, 5, 100_001)
    losses = preference_loss(grid, 0.5, "conservative", 0.25)
    assert grid[losses.argmin()].item() == pytest.approx(math.log(3), abs=1e-3)
    # flipping the labels' noise (e -> 1 - e) is flipping the preference (h -> -h)
    assert torch.allclose(preference_loss(grid, 0.5, "conservative", 0.4),
                          preference_loss(-grid, 0.5, "conservative", 0.6), atol=1e-6)


def test_ipo_by_hand_and_its_minimiser() -> None:
    # (h / beta - 1 / (2 beta))^2 with beta = 0.5: (2h - 1)^2
    h = torch.tensor([0.0, 0.5, 1.0, -1.0])
    assert torch.allclose(preference_loss(h, 0.5, "ipo"), torch.tensor([1.0, 0.0, 1.0, 9.0]))
    # minimised (at 0) where the log-ratio margin h / beta is 1 / (2 beta), i.e. h = 1/2 for every beta
    for beta in (0.1, 0.5, 2.0):
        margin = torch.tensor(0.0, requires_grad=True)  # the log-ratio margin h / beta, learnt by gradient descent
        optimizer = torch.optim.SGD([margin], lr=0.1)
        for _ in range(500):
            optimizer.zero_grad()
            preference_loss(beta * margin, beta, "ipo").backward()
            optimizer.step()
        assert margin.item() == pytest.approx(1 / (2 * beta), rel=1e-4)
        assert preference_loss(torch.tensor(0.5), beta, "ipo").item() == pytest.approx(0.0)


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected_logit_only() -> None:
    logits = torch.zeros(1, 4, requires_grad=True)
    reference = torch.zeros(1, 4)
    chosen, rejected = torch.tensor([1]), torch.tensor([3])
    h = preference_logits(action_log_probs(logits, chosen), action_log_probs(logits, rejected),
                          action_log_probs(reference, chosen), action_log_probs(reference, rejected), beta=0.5)
    preference_loss(h, 0.5).sum().backward()
    # d(-log sigmoid(h))/dh = -sigmoid(-h) = -1/2 at h = 0; dh/dlogits = beta * (e_w - e_l)
    assert torch.allclose(logits.grad, torch.tensor([[0.0, -0.25, 0.0, 0.25]]))


def test_losses_stay_finite_far_from_zero() -> None:
    h = torch.tensor([-200.0, 200.0])
    for loss, smoothing in (("dpo", 0.0), ("conservative", 0.1), ("ipo", 0.0)):
        assert torch.isfinite(preference_loss(h, 0.1, loss, smoothing)).all(), loss
    assert preference_loss(h, 0.1)[0].item() == pytest.approx(200.0)


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preference loss 'kto'"):
        preference_loss(torch.zeros(1), 0.1, "kto")
