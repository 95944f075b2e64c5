"""Tensor Fusion Network: outer product of modality embeddings."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class TensorFuser(Fuser):
    """Tensor Fusion (Zadeh et al. 2017, "Tensor Fusion Network for Multimodal Sentiment Analysis").

    Each modality is projected to ``factor_dim`` and extended with a constant
    1; the outer product of these vectors holds every uni-, bi- and
    tri-modal (…) interaction term explicitly, and a linear layer maps the
    flattened product to ``output_dim``. A missing modality contributes
    ``[0, …, 0, 1]``: its interaction terms vanish while the terms of the
    other modalities survive through its constant 1.

    The product has ``(factor_dim + 1) ** n_modalities`` entries, so its size
    is capped by ``max_product_dim``; the ``low-rank`` fuser scales linearly.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        factor_dim: int,
        max_product_dim: int,
    ) -> None:
        super().__init__(input_dims, output_dim)
        product_dim = (factor_dim + 1) ** len(self.modalities)
        if product_dim > max_product_dim:
            raise ValueError(
                f"tensor fusion of {len(self.modalities)} modalities with factor_dim={factor_dim} needs a "
                f"{factor_dim + 1}^{len(self.modalities)} = {product_dim}-dim outer product, above "
                f"max_product_dim={max_product_dim}; lower factor_dim, use the 'low-rank' fuser "
                "(linear in the number of modalities), or raise max_product_dim if memory allows"
            )
        self.factor_dim = factor_dim
        self.projections = nn.ModuleList(nn.Linear(dim, factor_dim) for dim in self.input_dims.values())
        self.output = nn.Linear(product_dim, output_dim)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, device, dtype, mask, inputs = self.masked_inputs(features, present)
        one = torch.ones(batch, 1, device=device, dtype=dtype)
        fused = one
        for modality, projection in zip(self.modalities, self.projections):
            # Skipping the projection of an absent modality leaves its grads None, so optimisers skip it.
            if modality in features:
                z = torch.where(mask[modality][:, None], projection(inputs[modality]), 0.0)
            else:
                z = torch.zeros(batch, self.factor_dim, device=device, dtype=dtype)
            fused = (fused[:, :, None] * torch.cat([z, one], dim=1)[:, None, :]).flatten(1)
        return self.output(fused)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor_dim={self.factor_dim}"
