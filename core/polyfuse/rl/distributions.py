"""Categorical distributions over one or several discrete action dimensions, and the action layout.

Actions are zero-based indices of shape ``(B, D)``, one column per action
dimension (``D = 1`` for a ``Discrete`` space); logits are ``(B, sum(nvec))``,
the dimensions' logits side by side. Every function is stateless, so each can
be checked against ``torch.distributions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from torch.nn import functional as F

from polyfuse.errors import PolyfuseError


@dataclass(frozen=True)
class ActionLayout:
    """How a ``Discrete`` or ``MultiDiscrete`` space maps to logits and back.

    ``nvec`` are the sizes of the independent dimensions (one for
    ``Discrete``), ``start`` their first values.
    """

    nvec: tuple[int, ...]
    start: tuple[int, ...]
    discrete: bool

    @classmethod
    def of(cls, space: Any, who: str) -> ActionLayout:
        """The layout of ``space``; ``who`` (the optimizer's name) is named when the space is not supported."""
        if isinstance(space, gymnasium.spaces.Discrete):
            return cls((int(space.n),), (int(space.start),), True)
        if isinstance(space, gymnasium.spaces.MultiDiscrete):
            if space.nvec.ndim != 1:
                raise PolyfuseError(
                    f"{who} supports MultiDiscrete action spaces with a 1-D nvec; this one has shape {space.nvec.shape}"
                )
            return cls(tuple(int(n) for n in space.nvec), tuple(int(s) for s in space.start), False)
        raise PolyfuseError(f"{who} supports Discrete and MultiDiscrete action spaces; this environment's is {space}")

    @property
    def num_logits(self) -> int:
        return sum(self.nvec)

    def to_env(self, indices: torch.Tensor) -> np.ndarray:
        """Zero-based ``(B, D)`` indices to the environment's actions: ``(B,)`` or ``(B, D)``, offset by start."""
        actions = indices.cpu().numpy().astype(np.int64) + np.asarray(self.start, dtype=np.int64)
        return actions[:, 0] if self.discrete else actions


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
