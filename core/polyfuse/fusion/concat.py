"""Feature-level (early) concatenation with learned placeholders for gaps."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class ConcatFuser(Fuser):
    """Concatenate modality features, optionally followed by ``Linear + ReLU``.

    Early fusion as in Baltrušaitis et al. 2019 ("Multimodal Machine Learning:
    A Survey and Taxonomy"). Zero-filling a missing modality would be
    indistinguishable from a genuine all-zero feature vector, so each modality
    has a learned placeholder vector that stands in for it where it is missing.
    Without ``output_dim`` the output is the raw concatenation
    (``sum(input_dims)`` wide).
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int | None = None) -> None:
        concat_dim = sum(input_dims.values())
        super().__init__(input_dims, output_dim if output_dim is not None else concat_dim)
        self.placeholders = nn.ParameterList(
            nn.Parameter(torch.zeros(dim)) for dim in self.input_dims.values()
        )
        self.projection = (
            nn.Sequential(nn.Linear(concat_dim, output_dim), nn.ReLU()) if output_dim is not None else None
        )

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        *_, inputs = self.masked_inputs(features, present, fill=self.placeholders)
        fused = torch.cat(list(inputs.values()), dim=1)
        return fused if self.projection is None else self.projection(fused)
