"""MLP over numeric observations (gymnasium Box spaces of any shape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from polyfuse.encoding import Encoder, numeric_batch


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between and after them."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


def box_scaling(space: Any, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset and scale mapping a Box's finite bounds to [-1, 1]; unbounded entries pass unchanged.

    Raw observations span very different ranges (pixels 0-255, angles ±π);
    rescaling by the declared bounds keeps one learning rate right for all.
    """
    size = int(np.prod(shape))
    low = np.full(size, -1.0, np.float32)
    high = np.full(size, 1.0, np.float32)
    if space is not None and hasattr(space, "low"):
        space_low = np.broadcast_to(np.asarray(space.low, np.float32), shape).reshape(-1)
        space_high = np.broadcast_to(np.asarray(space.high, np.float32), shape).reshape(-1)
        bounded = np.isfinite(space_low) & np.isfinite(space_high) & (space_high > space_low)
        low[bounded], high[bounded] = space_low[bounded], space_high[bounded]
    center = torch.from_numpy((high + low) / 2)
    half_range = torch.from_numpy((high - low) / 2)
    return center, half_range


class VectorEncoder(Encoder):
    """Flattens each observation, rescales it by the space's bounds and applies an MLP."""

    def __init__(self, shape: tuple[int, ...], hidden_sizes: Sequence[int], output_dim: int, space: Any = None):
        super().__init__()
        self.shape = tuple(shape)
        center, half_range = box_scaling(space, self.shape)
        self.register_buffer("center", center)
        self.register_buffer("half_range", half_range)
        self.net = mlp([int(np.prod(self.shape)), *hidden_sizes, output_dim])
        self.output_dim = output_dim

    def forward(self, batch: Any) -> torch.Tensor:
        x = numeric_batch(batch, self.modality)
        if x.dim() < 1 or x[0].numel() != int(np.prod(self.shape)):
            raise ValueError(
                f"modality {self.modality!r}: expected samples of shape {self.shape}, got {tuple(x.shape[1:])}"
            )
        flat = x.reshape(x.shape[0], -1).to(self.center.device)
        return self.net((flat - self.center) / self.half_range)
