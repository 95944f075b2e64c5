"""Max pooling over modalities: robust to a modality that goes silent, since a max ignores it."""

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion import Fuser, PresenceMask


class MaxPoolFuser(Fuser):
    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int) -> None:
        super().__init__(input_dims, output_dim=hidden_dim)  # sets self.input_dims, self.modalities
        self.projections = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.input_dims.values())

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        # Validates shapes; `inputs` has zeros where a modality is missing, so even NaN there
        # reaches neither the projections nor their gradients.
        batch, device, dtype, mask, inputs = self.masked_inputs(features, present)
        pooled = torch.full((batch, self.output_dim), float("-inf"), device=device, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            if modality in features:  # an absent modality's projection stays out of the graph
                keep = mask[modality][:, None]
                pooled = torch.where(keep, torch.maximum(pooled, projection(inputs[modality])), pooled)
        anything = torch.stack(list(mask.values()), dim=1).any(dim=1, keepdim=True)
        return torch.where(anything, pooled, 0.0)  # a sample with no modality at all gets zeros
