"""``vector`` and ``flatten``: numeric arrays (gymnasium Box and MultiBinary spaces), flattened, with or
without an MLP on top."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from polyfuse.encoding import Encoder, numeric_batch

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
UNBOUNDED = 1e6  # a Box bound this far from 0 stands for "no bound", not a scale to divide by


class VectorEncoder(Encoder):
    """Flatten, optionally rescale finite Box bounds to ``target_range``, then Linear+activation layers.

    Rescaling matters because observation scales vary wildly (pixel counts,
    velocities, flags) and an MLP learns poorly from unscaled inputs;
    dimensions with infinite bounds, or bounds so wide that they mean
    "unbounded" (gymnasium's CartPole writes float32's maximum), are passed
    through unchanged: rescaling them would turn every input into ~0. With
    ``output_dim=None`` there are no layers: the flattened, rescaled input is
    the feature (the ``flatten`` encoder, for inputs small enough to fuse as
    they are, which rescales to [0, 1] as pixel inputs conventionally are: a
    constant -1 offset on every input of the next layer slows its learning).
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        hidden_sizes: Sequence[int],
        output_dim: int | None,
        activation: str = "relu",
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
        target_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(int(n) for n in sample_shape)
        input_dim = int(np.prod(self.sample_shape))
        scale = torch.ones(input_dim)
        shift = torch.zeros(input_dim)
        if low is not None and high is not None:
            low_flat = np.broadcast_to(np.asarray(low, dtype=np.float64), self.sample_shape).reshape(-1)
            high_flat = np.broadcast_to(np.asarray(high, dtype=np.float64), self.sample_shape).reshape(-1)
            bounded = ((np.abs(low_flat) < UNBOUNDED) & (np.abs(high_flat) < UNBOUNDED) & (high_flat > low_flat))
            span = np.where(bounded, high_flat - low_flat, 1.0)
            bottom, width = target_range[0], target_range[1] - target_range[0]
            scale = torch.as_tensor(np.where(bounded, width / span, 1.0), dtype=torch.float32)
            shift = torch.as_tensor(np.where(bounded, bottom - width * low_flat / span, 0.0), dtype=torch.float32)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        if output_dim is None and hidden_sizes:
            raise ValueError("hidden layers need an output_dim")
        layers: list[nn.Module] = []
        width = input_dim
        for size in [*hidden_sizes, output_dim] if output_dim is not None else []:
            layers += [nn.Linear(width, int(size)), ACTIVATIONS[activation]()]
            width = int(size)
        self.mlp = nn.Sequential(*layers)
        self.output_dim = int(width)

    def forward(self, batch: Any) -> torch.Tensor:
        values = numeric_batch(batch, self.modality, self.sample_shape).to(self.scale.device, torch.float32)
        return self.mlp(torch.addcmul(self.shift, values.reshape(values.shape[0], -1), self.scale))
