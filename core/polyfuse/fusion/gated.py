"""Gated Multimodal Unit generalised to any number of modalities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


class GatedFuser(Fuser):
    """Gated Multimodal Unit (Arevalo et al. 2017, "Gated Multimodal Units for Information Fusion").

    Each modality gets a candidate ``h_m = tanh(W_m x_m)``; gates computed from
    *all* inputs decide, per sample and per hidden unit, how much each
    modality contributes: ``out = sum_m z_m * h_m``. The paper's bimodal
    ``z, 1 - z`` becomes a softmax over modalities, in which missing ones are
    masked out (and zeroed in the gate's input, so they cannot steer it).

    With a single modality a softmax would be constantly 1 and the gate would
    never learn, so it falls back to the GMU's sigmoid form against a closed
    gate: ``out = sigmoid(W_z x) * h``.

    With ``input_norm``, each modality's features are layer-normalised first.
    Encoder features that grow large (a ReLU CNN's can reach tens) drive both
    the tanh candidates and the softmax gates into saturation, where no
    gradient flows: a modality once gated out then stays out.
    """

    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int, input_norm: bool = False) -> None:
        super().__init__(input_dims, hidden_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for dim in self.input_dims.values()) if input_norm else None
        self.projections = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.input_dims.values())
        self.gate = nn.Linear(sum(self.input_dims.values()), len(self.modalities) * hidden_dim)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, _, _, mask, by_modality = self.masked_inputs(features, present)
        inputs = list(by_modality.values())
        if self.norms is not None:  # a gap stays zeros, as the gate's input wants it
            inputs = [torch.where(mask[m][:, None], norm(x), 0.0)
                      for m, norm, x in zip(self.modalities, self.norms, inputs)]
        candidates = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, inputs)], dim=1)
        logits = self.gate(torch.cat(inputs, dim=1)).view(batch, len(self.modalities), self.output_dim)
        keep = torch.stack([mask[m] for m in self.modalities], dim=1)[:, :, None]  # (B, N, 1)
        if len(self.modalities) == 1:
            gates = torch.sigmoid(logits) * keep
        else:
            # All -inf would softmax to NaN: give samples with no modality finite logits, then zero them.
            logits = logits.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(dim=1, keepdim=True), 0.0)
            gates = torch.softmax(logits, dim=1) * keep
        return (gates * candidates).sum(dim=1)
