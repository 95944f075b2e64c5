"""Late (decision-level) fusion: one head per modality, outputs combined."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class LateFuser(Fuser):
    """Decision-level fusion (Snoek et al. 2005, "Early versus Late Fusion in Semantic Video Analysis").

    Every modality gets its own MLP head to ``output_dim``; the heads' outputs
    are combined without any cross-modal interaction before that point, which
    makes the fuser robust to a modality dropping out. ``combine="weighted"``
    learns one logit per modality (softmax over the modalities present);
    ``combine="vote"`` averages the present heads' outputs. With a single
    modality both reduce to that modality's head, so no weights are built.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dim: int,
        combine: Literal["weighted", "vote"],
    ) -> None:
        if combine not in ("weighted", "vote"):
            raise ValueError(f"combine must be 'weighted' or 'vote', got {combine!r}")
        super().__init__(input_dims, output_dim)
        self.combine = combine
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim))
            for dim in self.input_dims.values()
        )
        self.combine_logits = (
            nn.Parameter(torch.zeros(len(self.modalities)))
            if combine == "weighted" and len(self.modalities) > 1
            else None
        )

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, _, dtype, mask, inputs = self.masked_inputs(features, present)
        outputs = [head(inputs[m]) for m, head in zip(self.modalities, self.heads)]
        keep = torch.stack([mask[m] for m in self.modalities], dim=1)  # (B, N)
        if self.combine_logits is None:
            weights = keep.to(dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        else:
            logits = self.combine_logits.expand(batch, -1)
            # All -inf would softmax to NaN: give samples with no modality finite logits, then zero them.
            logits = logits.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(dim=1, keepdim=True), 0.0)
            weights = torch.softmax(logits, dim=1) * keep
        return (weights[:, :, None] * torch.stack(outputs, dim=1)).sum(dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, combine={self.combine!r}"
