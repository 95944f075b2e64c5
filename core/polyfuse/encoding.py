"""The contract every encoder follows, built-in or third-party.

An encoder turns a batch of raw observations of one modality into
``(B, output_dim)`` features. Raw batches come straight from gymnasium's
vector environments: numpy arrays (images, vectors, discrete values) or
sequences of strings (text; a numpy array of ``str`` objects or a list).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of encoders.

    Subclasses set ``output_dim`` and implement ``forward(batch)``. An encoder
    whose parameters are all frozen is a pure function of its input, which
    lets polyfuse cache its features (see :mod:`polyfuse.feature_cache`).
    ``identity()`` must then describe everything the output depends on
    (architecture, weights, preprocessing) so cached features are never
    reused across different encoders.
    """

    output_dim: int

    def forward(self, batch: Any) -> torch.Tensor:  # noqa: D102 - documented on the class
        raise NotImplementedError

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def identity(self) -> str:
        """A string naming this encoder's configuration and weights (used as the cache namespace)."""
        raise NotImplementedError(f"{type(self).__name__} does not support feature caching")
