"""A small CNN for small images and symbolic grids (8x8 digit scans, MiniGrid's 7x7x3 view).

ImageNet-style backbones downsample 32x before their first useful feature;
on a 7x7 grid that leaves nothing. Stride-1 3x3 convolutions keep every cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from polyfuse.encoding import Encoder, numeric_batch


class SmallCNN(Encoder):
    """3x3 convolutions with ReLU, then a linear layer over the flattened map."""

    def __init__(self, shape: tuple[int, int, int], channels: Sequence[int], output_dim: int, scale: float) -> None:
        super().__init__()
        height, width, in_channels = shape
        self.shape = tuple(shape)
        self.scale = scale
        layers: list[nn.Module] = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
            in_channels = out_channels
        self.convolutions = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, output_dim), nn.ReLU())
        self.output_dim = output_dim

    def forward(self, batch: Any) -> torch.Tensor:
        x = numeric_batch(batch, self.modality)
        if x.dim() == 3 and self.shape[2] == 1:
            x = x.unsqueeze(-1)  # (B, H, W) grayscale
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"modality {self.modality!r}: expected images of shape {self.shape} (H, W, C), "
                f"got {tuple(x.shape[1:])}"
            )
        x = x.permute(0, 3, 1, 2).to(self.head[1].weight.device) / self.scale
        return self.head(self.convolutions(x))
