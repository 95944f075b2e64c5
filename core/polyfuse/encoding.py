"""The contract every encoder follows, built-in or third-party.

An encoder turns a batch of raw observations of one modality into
``(B, output_dim)`` features. Raw batches come straight from gymnasium's
vector environments: numpy arrays (images, vectors, discrete values) or
sequences of strings (text; a numpy array of ``str`` objects or a list).
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
    modality: str = "input"  # set by build_network, so data errors can name the modality

    def forward(self, batch: Any) -> torch.Tensor:  # noqa: D102 - documented on the class
        raise NotImplementedError

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def identity(self) -> str:
        """A string naming this encoder's configuration and weights (used as the cache namespace)."""
        raise NotImplementedError(f"{type(self).__name__} does not support feature caching")


def numeric_batch(batch: Any, modality: str, trailing_dims: int | None = None) -> torch.Tensor:
    """A raw numeric batch as a float32 tensor, with errors that name the modality and the bad sample.

    ``trailing_dims`` is the number of dimensions each sample must have
    (``None``: any). NaN or infinite values are refused: they would silently
    poison every feature computed from them.
    """
    try:
        tensor = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"modality {modality!r}: expected a numeric array batch, got {type(batch).__name__} ({exc})"
        ) from None
    tensor = tensor.to(torch.float32)
    if tensor.dim() == 0 or (trailing_dims is not None and tensor.dim() != trailing_dims + 1):
        expected = "a batch" if trailing_dims is None else f"{trailing_dims + 1} dims (batch + {trailing_dims})"
        raise ValueError(f"modality {modality!r}: expected {expected}, got shape {tuple(tensor.shape)}")
    finite = torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
    if not finite.all():
        index = int((~finite).nonzero()[0])
        raise ValueError(f"modality {modality!r}: sample {index} contains NaN or infinite values")
    return tensor
