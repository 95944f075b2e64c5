"""PPO's clipped surrogate objective (Schulman et al. 2017)."""

from __future__ import annotations

import torch


def clipped_policy_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``-mean(min(r A, clip(r, 1-c, 1+c) A))``, as a loss to minimise.

    Returns the loss and detached diagnostics: ``approx_kl`` (the low-variance
    estimator ``mean((r - 1) - log r)`` of KL(old || new)) and
    ``clip_fraction`` (share of samples whose ratio lies outside ``[1-c, 1+c]``).
    """
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
        }
    return loss, stats


def behaviour_weights(
    proximal_log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor, cap: float | None
) -> torch.Tensor:
    """``pi_prox / pi_behaviour``: the importance weight that corrects lagged rollouts; at most ``cap`` when given.

    A cap truncates the weight (as V-trace's rho-bar does), so that a rare
    action the proximal policy now favours cannot dominate a minibatch.
    """
    weights = (proximal_log_probs - behaviour_log_probs).exp()
    return weights if cap is None else weights.clamp(max=cap)


def decoupled_policy_loss(
    log_probs: torch.Tensor, proximal_log_probs: torch.Tensor, weights: torch.Tensor, advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Decoupled PPO (Hilton, Cobbe, Schulman 2021): ``-mean(w min(r A, clip(r, 1-c, 1+c) A))`` with ``r = pi / pi_prox``.

    The clipping window is centred on the proximal policy (the learner's at
    the start of the update), not on the behaviour policy that collected a
    lagged rollout; the off-policy correction is the separate weight ``w``
    (:func:`behaviour_weights`). ``w > 0``, so it may scale the advantages;
    with ``w = 1`` this is :func:`clipped_policy_loss` against the proximal
    log-probabilities. Diagnostics as :func:`clipped_policy_loss`'s, on ``r``.
    """
    return clipped_policy_loss(log_probs, proximal_log_probs, weights * advantages, clip_range)
