"""The pure maths of PPO: advantages, losses and categorical distributions over (multi-)discrete actions.

Every function here is stateless, so each can be tested against a hand
computation. Actions are zero-based indices of shape ``(B, D)`` with one
column per action dimension (``D = 1`` for a ``Discrete`` space); logits are
``(B, sum(nvec))``, the dimensions' logits side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


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
    """Generalised advantage estimates and value targets for a rollout of ``T`` steps of ``N`` envs.

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


def clipped_policy_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, as a loss to minimise: ``-mean(min(r A, clip(r, 1-c, 1+c) A))``.

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


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range_vf: float | None
) -> torch.Tensor:
    """``0.5 * mean((V - R)^2)``; with ``clip_range_vf``, the max of that and the clipped-value error."""
    unclipped = (values - returns) ** 2
    if clip_range_vf is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def normalize(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean 0, std 1 (left centred only when there is a single sample)."""
    if advantages.numel() < 2:
        return advantages - advantages.mean()
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """``1 - Var(targets - predictions) / Var(targets)``: 1 is perfect, 0 no better than a constant.

    NaN when the targets have no variance (nothing to explain).
    """
    variance = targets.var(unbiased=False)
    if variance.item() == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var(unbiased=False) / variance)


# --- categorical distributions over one or several discrete dimensions -------------------------------


def _split(logits: torch.Tensor, nvec: Sequence[int]) -> tuple[torch.Tensor, ...]:
    if logits.shape[-1] != sum(nvec):
        raise ValueError(f"expected {sum(nvec)} logits per sample for action sizes {list(nvec)}, got {logits.shape[-1]}")
    return torch.split(logits, list(nvec), dim=-1)


def log_prob(logits: torch.Tensor, actions: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """``(B,)`` log-probability of ``actions`` ``(B, D)``: the sum over the independent dimensions."""
    total = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    for d, part in enumerate(_split(logits, nvec)):
        total = total + F.log_softmax(part, dim=-1).gather(-1, actions[:, d : d + 1].long()).squeeze(-1)
    return total


def entropy(logits: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """``(B,)`` entropy, summed over the dimensions."""
    total = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    for part in _split(logits, nvec):
        log_p = F.log_softmax(part, dim=-1)
        total = total - (log_p.exp() * log_p).sum(-1)
    return total


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """``(B,)`` exact KL(p || q) between two factorised categoricals, summed over the dimensions."""
    total = torch.zeros(logits_p.shape[0], dtype=logits_p.dtype, device=logits_p.device)
    for part_p, part_q in zip(_split(logits_p, nvec), _split(logits_q, nvec)):
        log_p = F.log_softmax(part_p, dim=-1)
        log_q = F.log_softmax(part_q, dim=-1)
        total = total + (log_p.exp() * (log_p - log_q)).sum(-1)
    return total


def sample(logits: torch.Tensor, nvec: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``(B, D)`` actions drawn with ``generator`` (a CPU generator; sampling happens on the CPU)."""
    columns = [
        torch.multinomial(F.softmax(part.detach().float().cpu(), dim=-1), 1, generator=generator)
        for part in _split(logits, nvec)
    ]
    return torch.cat(columns, dim=1)


def mode(logits: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """``(B, D)`` most likely actions."""
    return torch.stack([part.argmax(-1) for part in _split(logits, nvec)], dim=1)
