"""Softmax attention over projected modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class AttentionFuser(Fuser):
    """Modality attention (Hori et al. 2017, "Attention-Based Multimodal Fusion for Video Description").

    Each modality is projected to ``hidden_dim`` and tagged with a learned
    modality embedding; an additive scorer ``q . tanh(W h_m)`` rates every
    modality per sample, and the output is the softmax-weighted sum over the
    modalities present. Unlike gating, the weights come from each modality's
    own features, so the cost grows linearly with the number of modalities
    and a missing one is just dropped from the softmax.

    With a single modality the softmax weight is always 1, so no scorer is
    built (it could never learn anything).
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int, attention_dim: int) -> None:
        super().__init__(input_dims, hidden_dim)
        self.projections = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.input_dims.values())
        self.modality_embeddings = nn.Parameter(0.02 * torch.randn(len(self.modalities), hidden_dim))
        # No bias on the last layer: softmax ignores a score offset shared by all modalities.
        self.scorer = (
            nn.Sequential(
                nn.Linear(hidden_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False)
            )
            if len(self.modalities) > 1
            else None
        )

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        _, _, dtype, mask, inputs = self.masked_inputs(features, present)
        tokens = [projection(inputs[m]) for m, projection in zip(self.modalities, self.projections)]
        values = torch.stack(tokens, dim=1) + self.modality_embeddings  # (B, N, H)
        keep = torch.stack([mask[m] for m in self.modalities], dim=1)  # (B, N)
        if self.scorer is None:
            weights = keep.to(dtype)
        else:
            scores = self.scorer(values).squeeze(-1)
            # All -inf would softmax to NaN: give samples with no modality finite scores, then zero them.
            scores = scores.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(dim=1, keepdim=True), 0.0)
            weights = torch.softmax(scores, dim=1) * keep
        return (weights[:, :, None] * values).sum(dim=1)
