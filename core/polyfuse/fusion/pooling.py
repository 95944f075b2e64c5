"""Sum or mean pooling of per-modality projections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class PoolingFuser(Fuser):
    """Project every modality to ``hidden_dim`` and sum or average the present ones.

    The simplest order-invariant fusion (the additive baseline of Baltrušaitis
    et al. 2019, "Multimodal Machine Learning: A Survey and Taxonomy"): its
    width does not grow with the number of modalities, and a missing modality
    is simply left out of the pool. ``mean`` divides by the number of
    modalities present per sample, so the output scale does not depend on how
    many are missing; a sample with none gets zeros.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int, mode: Literal["sum", "mean"]) -> None:
        if mode not in ("sum", "mean"):
            raise ValueError(f"pooling mode must be 'sum' or 'mean', got {mode!r}")
        super().__init__(input_dims, hidden_dim)
        self.mode = mode
        self.projections = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.input_dims.values())

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, device, dtype, mask, inputs = self.masked_inputs(features, present)
        total = torch.zeros(batch, self.output_dim, device=device, dtype=dtype)
        count = torch.zeros(batch, 1, device=device, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            # Skipping the projection of an absent modality leaves its grads None, so optimisers skip it.
            if modality not in features:
                continue
            keep = mask[modality][:, None]
            total = total + torch.where(keep, projection(inputs[modality]), 0.0)
            count = count + keep.to(dtype)
        return total if self.mode == "sum" else total / count.clamp(min=1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"
