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
