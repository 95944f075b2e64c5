"""The pieces of a DQN update that are worth testing on their own: targets, target sync, epsilon."""

from __future__ import annotations

import torch
from torch import nn


def td_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """``rewards + discounts * V(next)``, where ``discounts`` is ``gamma ** horizon`` (0 when terminated).

    Plain DQN: ``V = max_a Q_target(next, a)``. Double DQN (``next_q_online``
    given): the online network chooses the action and the target network
    values it, ``V = Q_target(next, argmax_a Q_online(next, a))``, which
    removes the max operator's overestimation bias.
    """
    if next_q_online is None:
        next_values = next_q_target.max(dim=1).values
    else:
        choice = next_q_online.argmax(dim=1, keepdim=True)
        next_values = next_q_target.gather(1, choice).squeeze(1)
    return rewards + discounts * next_values


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target``; ``tau == 1`` copies (a hard update).

    Buffers that are not floating point (counters) are always copied; tensors
    the two networks share (frozen encoders, see ``polyfuse.network.frozen_twin``) are skipped.
    """
    online_state = online.state_dict()
    for name, value in target.state_dict().items():
        source = online_state[name]
        if value.data_ptr() == source.data_ptr():
            continue
        if tau >= 1.0 or not value.is_floating_point():
            value.copy_(source)
        else:
            value.lerp_(source, tau)


def linear_schedule(start: float, end: float, duration: float, step: float) -> float:
    """``start`` at step 0, falling linearly to ``end`` at ``duration``, then ``end``."""
    if duration <= 0 or step >= duration:
        return float(end)
    return float(start + (end - start) * max(step, 0) / duration)
