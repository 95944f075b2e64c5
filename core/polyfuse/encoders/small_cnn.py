"""``small-cnn``: a few 3x3 convolutions for small images (8x8 digit scans) and symbolic grids.

Symbolic grids such as MiniGrid's ``(7, 7, 3)`` observation hold category
codes per cell (object, colour, state), not intensities: scaling them as
pixels would make "key" numerically close to "ball". In ``grid`` mode each
channel's code is embedded instead, and the convolutions run on the embeddings.

Spatial fusers read the last convolution's output, before pooling, through
``forward_spatial`` (the encoder contract's optional spatial API, shared with
``timm``); its ``(C, H, W)`` is ``feature_map_shape``.

Two steps of grid mode are computed by this module rather than by torch's
defaults, because the defaults dominated a grid encoder's update on CPU (issue
12): the embedding's gradient is one ``index_add_`` (``embedding_dense_backward``
adds row by row; same rows in the same order, so bit-identical), and the
pooling is one matrix product over the map's cells (the embedding makes the
convolutions run channels-last, which sent ``adaptive_avg_pool2d``'s backward
down its slow path; the product is the same average up to float rounding, and
autograd's matrix-product backward is fast in any layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from polyfuse.encoding import Encoder, first_bad_sample, flagged, image_batch, numeric_batch

DOWNSAMPLE_ABOVE = 4  # a layer strides by 2 while the map is at least this many times pool_size


class _Embedding(torch.autograd.Function):
    """``F.embedding(indices, weight)`` whose weight gradient is one ``index_add_`` (CPU).

    ``embedding_dense_backward`` on CPU adds the gradient rows one at a time; ``index_add_`` adds
    the same rows in the same (index) order, so the result is bit-identical, about 4x faster.
    """

    @staticmethod
    def forward(ctx: Any, indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.rows = weight.shape[0]
        return F.embedding(indices, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (indices,) = ctx.saved_tensors
        width = grad.shape[-1]
        weight_grad = grad.new_zeros(ctx.rows, width).index_add_(0, indices.reshape(-1), grad.reshape(-1, width))
        return None, weight_grad


def _window(index: int, size_out: int, size_in: int) -> tuple[int, int]:
    """Input rows ``[start, end)`` that adaptive average pooling averages into output row ``index``."""
    return index * size_in // size_out, -(-(index + 1) * size_in // size_out)


def _pooling_matrix(size_in: tuple[int, int], size_out: tuple[int, int]) -> torch.Tensor:
    """``P`` of shape ``(out_h * out_w, in_h * in_w)``: ``P @ cells`` average-pools row-major cells."""
    (in_h, in_w), (out_h, out_w) = size_in, size_out
    weights = torch.zeros(out_h, out_w, in_h, in_w)
    for i in range(out_h):
        h0, h1 = _window(i, out_h, in_h)
        for j in range(out_w):
            w0, w1 = _window(j, out_w, in_w)
            weights[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
    return weights.reshape(out_h * out_w, in_h * in_w)


class SmallCNNEncoder(Encoder):
    """Conv3x3+ReLU layers (stride 2 while the map is large), adaptive average pooling, Linear+ReLU.

    ``forward_spatial`` also returns the last convolution's map (before pooling).
    """

    def __init__(
        self,
        sample_shape: tuple[int, int, int],
        channels: Sequence[int],
        output_dim: int,
        pool_size: int,
        mode: Literal["image", "grid"] = "image",
        grid_values: int = 256,
        cell_embedding_dim: int = 8,
    ) -> None:
        super().__init__()
        height, width, in_channels = sample_shape
        self.sample_shape = sample_shape
        self.mode = mode
        self.grid_values = grid_values
        if mode == "grid":
            self.cells = nn.Embedding(in_channels * grid_values, cell_embedding_dim)
            self.register_buffer("channel_offsets", torch.arange(in_channels) * grid_values, persistent=False)
            in_channels *= cell_embedding_dim
        layers: list[nn.Module] = []
        width_in, size = in_channels, min(height, width)
        for out_channels in channels:
            stride = 2 if size >= DOWNSAMPLE_ABOVE * pool_size else 1
            layers += [nn.Conv2d(width_in, int(out_channels), 3, stride=stride, padding=1), nn.ReLU()]
            width_in, size = int(out_channels), (size + stride - 1) // stride
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            mapped = self.convs(torch.zeros(1, in_channels, height, width))
        pooled = (min(mapped.shape[2], pool_size), min(mapped.shape[3], pool_size))
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width_in * pooled[0] * pooled[1], output_dim), nn.ReLU()
        )
        self.output_dim = int(output_dim)
        self.feature_map_shape: tuple[int, int, int] = (width_in, int(mapped.shape[2]), int(mapped.shape[3]))
        if mode == "grid":
            matrix = _pooling_matrix(self.feature_map_shape[1:], pooled)
            self.register_buffer("pool_matrix", matrix, persistent=False)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.forward_spatial(batch)[0]

    def forward_spatial(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled (B, output_dim), feature map (B, C, H, W))`` from one pass, for spatial fusers.

        The map is the last convolution's output (after its ReLU), of shape ``feature_map_shape``.
        """
        device = self.head[1].weight.device
        x = self._embed_grid(batch, device) if self.mode == "grid" else self._image(batch, device)
        feature_map = self.convs(x)
        pooled = self._pool_grid(feature_map) if self.mode == "grid" else self.pool(feature_map)
        return self.head(pooled), feature_map

    def _pool_grid(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``self.pool(feature_map)`` as one matrix product over the cells, channels-last as the map is."""
        batch, channels, height, width = feature_map.shape
        cells = feature_map.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        pooled = torch.matmul(self.pool_matrix, cells)  # (B, out_h * out_w, C)
        return pooled.transpose(1, 2).reshape(batch, channels, *self.pool.output_size)

    def _image(self, batch: Any, device: torch.device) -> torch.Tensor:
        x = image_batch(batch, self.modality, device)
        height, width, channels = self.sample_shape
        if tuple(x.shape[1:]) != (channels, height, width):
            raise ValueError(
                f"modality {self.modality!r}: expected images of shape ({height}, {width}, {channels}) "
                f"(H, W, C), got ({x.shape[2]}, {x.shape[3]}, {x.shape[1]})"
            )
        return x

    def _embed_grid(self, batch: Any, device: torch.device) -> torch.Tensor:
        codes = numeric_batch(batch, self.modality).to(device)
        if codes.dim() == 3 and self.sample_shape[2] == 1:
            codes = codes.unsqueeze(-1)  # an (H, W) grid space
        if tuple(codes.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"modality {self.modality!r}: expected grids of shape {self.sample_shape} (H, W, C), "
                f"got {tuple(codes.shape[1:])}"
            )
        if not codes.is_floating_point():
            codes = codes.long()  # comparisons in uint8 would wrap grid_values=256 to 0
        bad = (codes < 0) | (codes >= self.grid_values)
        if codes.is_floating_point():
            bad |= codes != codes.round()
        if flagged(bad):
            raise ValueError(
                f"modality {self.modality!r}: sample {first_bad_sample(bad)} has grid cells that are "
                f"not whole numbers in 0..{self.grid_values - 1}"
            )
        indices = codes.long() + self.channel_offsets
        weight = self.cells.weight
        if weight.device.type == "cpu" and torch.is_grad_enabled() and weight.requires_grad:
            embedded = _Embedding.apply(indices, weight)  # (B, H, W, C, E)
        else:
            embedded = self.cells(indices)
        return embedded.flatten(3).permute(0, 3, 1, 2)
