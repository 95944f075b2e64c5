"""The contract every fuser follows, built-in or third-party.

A fuser maps ``{modality: (B, D_m) features}`` to one ``(B, output_dim)`` tensor.
Modalities may be missing: a whole key absent from ``features`` means the
modality is missing for every sample; ``present[m]`` (a ``(B,)`` bool tensor,
True where the sample has modality ``m``) marks per-sample gaps. Fusers decide
how to fill a gap (a learned placeholder, masking attention, the constant
term of a tensor product…), so that no caller has to zero-fill by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

PresenceMask = Mapping[str, torch.Tensor]


class Fuser(nn.Module):
    """Base class for fusers: stores the modality layout and validates inputs."""

    def __init__(self, input_dims: Mapping[str, int], output_dim: int) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("a fuser needs at least one modality")
        for modality, dim in input_dims.items():
            if int(dim) <= 0:
                raise ValueError(f"modality {modality!r} has feature dim {dim}; it must be positive")
        self.input_dims: dict[str, int] = {m: int(d) for m, d in input_dims.items()}
        self.modalities: tuple[str, ...] = tuple(self.input_dims)
        self.output_dim = int(output_dim)

    def forward(  # noqa: D102 - documented on the class
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def batch_layout(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None
    ) -> tuple[int, torch.device, torch.dtype, dict[str, torch.Tensor]]:
        """Check ``features`` against the declared modalities and resolve presence.

        Returns the batch size, device, dtype and a ``(B,)`` bool presence tensor
        for every declared modality (all False for a modality absent from
        ``features``).
        """
        unknown = set(features) - set(self.modalities)
        if unknown:
            raise ValueError(
                f"unknown modalities {sorted(unknown)}; this fuser was built for {list(self.modalities)}"
            )
        if not features:
            raise ValueError("no modality given: at least one feature tensor is needed")
        reference = next(iter(features.values()))
        batch, device, dtype = reference.shape[0], reference.device, reference.dtype
        resolved: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            tensor = features.get(modality)
            if tensor is None:
                resolved[modality] = torch.zeros(batch, dtype=torch.bool, device=device)
                continue
            expected = self.input_dims[modality]
            if tensor.dim() != 2 or tensor.shape[0] != batch or tensor.shape[1] != expected:
                raise ValueError(
                    f"modality {modality!r}: expected features of shape ({batch}, {expected}), "
                    f"got {tuple(tensor.shape)}"
                )
            mask = None if present is None else present.get(modality)
            if mask is None:
                resolved[modality] = torch.ones(batch, dtype=torch.bool, device=device)
            else:
                if mask.shape != (batch,):
                    raise ValueError(
                        f"presence mask of {modality!r} must have shape ({batch},), got {tuple(mask.shape)}"
                    )
                resolved[modality] = mask.to(device=device, dtype=torch.bool)
        return batch, device, dtype, resolved

    def masked_inputs(
        self,
        features: Mapping[str, torch.Tensor],
        present: PresenceMask | None,
        fill: Iterable[torch.Tensor] | None = None,
    ) -> tuple[int, torch.device, torch.dtype, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``batch_layout``'s tuple, then every declared modality's ``(B, D_m)`` input with gaps filled.

        Gaps are zeros, or the ``(D_m,)`` vectors of ``fill`` (one per declared
        modality, in order). Masked rows are selected away rather than
        multiplied by zero, so garbage (even NaN) in them reaches neither the
        output nor the gradients. A modality given without a presence mask is
        passed through as it is (no selection: nothing to fill, and nothing
        for autograd to record).
        """
        batch, device, dtype, mask = self.batch_layout(features, present)
        fills = [None] * len(self.modalities) if fill is None else list(fill)
        inputs: dict[str, torch.Tensor] = {}
        for (modality, dim), gap in zip(self.input_dims.items(), fills, strict=True):
            x = features.get(modality)
            if x is not None and (present is None or present.get(modality) is None):
                inputs[modality] = x
            elif x is not None:
                inputs[modality] = torch.where(mask[modality][:, None], x, 0.0 if gap is None else gap)
            elif gap is None:
                inputs[modality] = torch.zeros(batch, dim, device=device, dtype=dtype)
            else:
                inputs[modality] = gap.expand(batch, -1)
        return batch, device, dtype, mask, inputs

    def extra_repr(self) -> str:
        return f"input_dims={self.input_dims}, output_dim={self.output_dim}"
