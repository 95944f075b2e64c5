"""``onehot`` and ``embedding``: discrete values (gymnasium Discrete and MultiDiscrete spaces).

A Discrete space is one component; a MultiDiscrete space has one component
per entry, each encoded separately and concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from polyfuse.encoding import Encoder, first_bad_sample, flagged, numeric_batch


class _DiscreteEncoder(Encoder):
    """Checks a batch of discrete values and shifts them to 0-based indices per component."""

    def __init__(self, sizes: Sequence[int], starts: Sequence[int], multi: bool) -> None:
        super().__init__()
        self.sizes = [int(n) for n in sizes]
        self.multi = multi
        self.register_buffer("starts", torch.as_tensor(list(starts), dtype=torch.long), persistent=False)
        self.register_buffer("limits", torch.as_tensor(self.sizes, dtype=torch.long), persistent=False)

    def indices(self, batch: Any) -> torch.Tensor:
        """``(B, components)`` 0-based indices; a value outside its space names its sample."""
        shape = (len(self.sizes),) if self.multi else ()
        values = numeric_batch(batch, self.modality, shape).to(self.starts.device)
        if values.is_floating_point() and flagged(values != values.round()):
            raise ValueError(f"modality {self.modality!r}: discrete values must be whole numbers")
        index = values.long().reshape(values.shape[0], -1) - self.starts
        outside = (index < 0) | (index >= self.limits)
        if flagged(outside):
            sample = first_bad_sample(outside)
            raise ValueError(
                f"modality {self.modality!r}: sample {sample} holds {values[sample].tolist()}, "
                f"outside the space (sizes {self.sizes}, starting at {self.starts.tolist()})"
            )
        return index


class OneHotEncoder(_DiscreteEncoder):
    """One-hot vectors, concatenated over components: no parameters, so no training and no caching."""

    cacheable = False  # cheaper to compute than to look up

    def __init__(self, sizes: Sequence[int], starts: Sequence[int], multi: bool) -> None:
        super().__init__(sizes, starts, multi)
        self.output_dim = sum(self.sizes)

    def forward(self, batch: Any) -> torch.Tensor:
        index = self.indices(batch)
        parts = [F.one_hot(index[:, i], size).float() for i, size in enumerate(self.sizes)]
        return torch.cat(parts, dim=1)


class EmbeddingEncoder(_DiscreteEncoder):
    """A learned embedding table per component, concatenated."""

    def __init__(self, sizes: Sequence[int], starts: Sequence[int], multi: bool, embedding_dim: int) -> None:
        super().__init__(sizes, starts, multi)
        self.tables = nn.ModuleList(nn.Embedding(size, embedding_dim) for size in self.sizes)
        self.output_dim = embedding_dim * len(self.sizes)

    def forward(self, batch: Any) -> torch.Tensor:
        index = self.indices(batch)
        return torch.cat([table(index[:, i]) for i, table in enumerate(self.tables)], dim=1)
