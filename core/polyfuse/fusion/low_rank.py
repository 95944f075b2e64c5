"""Low-rank Multimodal Fusion: tensor fusion without building the tensor."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class LowRankFuser(Fuser):
    """Low-rank Multimodal Fusion (Liu et al. 2018).

    "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors", ACL 2018.

    The weight tensor of a Tensor Fusion Network is factorised into ``rank``
    modality-specific factors of shape ``(d_m + 1, output_dim)``; each is
    applied to ``[x_m, 1]``, the results are multiplied elementwise across
    modalities and summed over the rank with learned weights. Cost is linear
    in the number of modalities instead of exponential. A missing modality
    contributes ``[0, …, 0, 1]``, i.e. only its factors' constant row.
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int, rank: int) -> None:
        super().__init__(input_dims, output_dim)
        self.rank = rank
        self.factors = nn.ParameterList()
        for dim in self.input_dims.values():
            factor = torch.randn(rank, dim + 1, output_dim) / dim**0.5
            # Constant row starts at 1, so the product starts as prod_m (1 + W_m x_m): like TFN's appended 1,
            # a missing modality then multiplies by ~1 instead of shrinking the others' terms.
            factor[:, dim, :] = 1.0
            self.factors.append(nn.Parameter(factor))
        self.rank_weights = nn.Parameter(torch.randn(rank) / rank**0.5)
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, device, dtype, _, inputs = self.masked_inputs(features, present)
        one = torch.ones(batch, 1, device=device, dtype=dtype)
        fused = None
        for modality, factor in zip(self.modalities, self.factors):
            projected = torch.einsum("bd,rdo->bro", torch.cat([inputs[modality], one], dim=1), factor)
            fused = projected if fused is None else fused * projected
        return torch.einsum("r,bro->bo", self.rank_weights, fused) + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
