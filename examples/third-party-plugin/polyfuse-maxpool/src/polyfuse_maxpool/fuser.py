"""Max pooling over modalities: robust to a modality that goes silent, since a max ignores it."""

import torch
from torch import nn

from polyfuse.fusion import Fuser


class MaxPoolFuser(Fuser):
    def __init__(self, input_dims, hidden_dim: int) -> None:
        super().__init__(input_dims, hidden_dim)
        self.projections = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.input_dims.values())

    def forward(self, features, present=None):
        batch, device, dtype, mask = self.batch_layout(features, present)
        pooled = torch.full((batch, self.output_dim), float("-inf"), device=device, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            if modality in features:
                projected = projection(features[modality])
                keep = mask[modality][:, None]
                pooled = torch.where(keep, torch.maximum(pooled, projected), pooled)
        return torch.where(torch.isinf(pooled), torch.zeros_like(pooled), pooled)
