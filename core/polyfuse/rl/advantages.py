"""Advantage estimates and the value function's fit: what every actor-critic computes the same way."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    last_values: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates (Schulman et al. 2016) and value targets for ``T`` steps of ``N`` envs.

    Args:
        rewards, values: ``(T, N)``; ``values[t]`` is V(s_t), the state the step's action was taken in.
        terminated, truncated: ``(T, N)`` bools: the episode ended with step ``t`` (same-step
            autoreset: the next row's state is already a new episode's).
        last_values: ``(N,)`` V of the observations after the last step.
        final_values: ``(T, N)`` V of the final observation of an episode truncated at step ``t``
            (read where ``truncated & ~terminated``; anything elsewhere).
        gamma, gae_lambda: discount and GAE lambda.

    Termination bootstraps from 0, truncation from the final observation's
    value; either way the advantage does not flow across the episode boundary.

    Returns ``(advantages, returns)``, both ``(T, N)``, with ``returns = advantages + values``.
    """
    steps = rewards.shape[0]
    terminated = terminated.bool()
    ended = terminated | truncated.bool()
    zero = torch.zeros_like(last_values)
    advantages = torch.zeros_like(rewards)
    running = zero
    for t in reversed(range(steps)):
        next_values = last_values if t == steps - 1 else values[t + 1]
        bootstrap = torch.where(ended[t], torch.where(terminated[t], zero, final_values[t]), next_values)
        delta = rewards[t] + gamma * bootstrap - values[t]
        running = delta + gamma * gae_lambda * (~ended[t]).to(rewards.dtype) * running
        advantages[t] = running
    return advantages, advantages + values


def normalize(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean 0, std 1 (left centred only when there is a single sample)."""
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def value_loss(
    values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
) -> torch.Tensor:
    """``0.5 * mean((V - R)^2)``; with ``clip_range`` (and the rollout's ``old_values``), the pessimistic max
    of that and the error of values clipped to ``old_values ± clip_range`` (PPO's value clipping)."""
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped.mean()
    if old_values is None:
        raise ValueError("value clipping needs the rollout's old_values")
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """``1 - Var(targets - predictions) / Var(targets)``: 1 is perfect, 0 no better than a constant.

    NaN when the targets have no variance (nothing to explain).
    """
    variance = targets.var(unbiased=False)
    if variance.item() == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var(unbiased=False) / variance)
