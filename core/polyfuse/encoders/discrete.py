"""Encoders for discrete values (gymnasium Discrete spaces): one-hot and learned embeddings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyfuse.encoding import Encoder, numeric_batch


def discrete_indices(batch: Any, modality: str, n: int, start: int = 0) -> torch.Tensor:
    """Batch of discrete values as indices in [0, n), refusing out-of-range values by sample."""
    values = numeric_batch(batch, modality).reshape(-1)
    indices = values.long() - start
    bad = (indices < 0) | (indices >= n) | (values != values.round())
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"modality {modality!r}: sample {index} has value {values[index].item()}, "
            f"outside the space's {n} values starting at {start}"
        )
    return indices


class OneHotEncoder(Encoder):
    """Each value as a one-hot vector: no parameters, nothing to learn, nothing worth caching."""

    def __init__(self, n: int, start: int = 0) -> None:
        super().__init__()
        self.n, self.start = n, start
        self.output_dim = n

    def forward(self, batch: Any) -> torch.Tensor:
        return F.one_hot(discrete_indices(batch, self.modality, self.n, self.start), self.n).float()


class EmbeddingEncoder(Encoder):
    """A learned vector per value: compact when a space has many values."""

    def __init__(self, n: int, output_dim: int, start: int = 0) -> None:
        super().__init__()
        self.n, self.start = n, start
        self.embedding = nn.Embedding(n, output_dim)
        self.output_dim = output_dim

    def forward(self, batch: Any) -> torch.Tensor:
        indices = discrete_indices(batch, self.modality, self.n, self.start)
        return self.embedding(indices.to(self.embedding.weight.device))
