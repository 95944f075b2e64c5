"""Batches of dict observations with mixed modalities: numeric arrays and text.

A batch maps each observation key to either a numpy array whose first axis is
the batch (images, vectors, discrete values) or a sequence of strings (text:
the tuple gymnasium's vector envs return for a ``Text`` space, a list, or a
numpy array of ``str``). Text is always handed back as a tuple of ``str``,
the form the environments produce, so encoders see replayed batches exactly
as they see live ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Batch = dict[str, Any]
Single = dict[str, Any]


def is_text(value: Any) -> bool:
    """Whether a batched observation value holds strings rather than numbers."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "OUS"
    return isinstance(value, (tuple, list))


def batch_length(observations: Mapping[str, Any]) -> int:
    """The number of samples in a batch (checked to agree across keys)."""
    lengths = {key: len(value) for key, value in observations.items()}
    if not lengths:
        raise ValueError("an observation batch needs at least one key")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"observation keys disagree on the batch size: {lengths}")
    return next(iter(lengths.values()))


def check_dict(observations: Any) -> Mapping[str, Any]:
    if not isinstance(observations, Mapping):
        raise TypeError(
            f"dqn needs dict observations (one key per modality), got {type(observations).__name__}; "
            "wrap the environment so that its observation space is a gymnasium Dict"
        )
    for key, value in observations.items():
        if isinstance(value, Mapping):
            raise TypeError(f"observation key {key!r} holds a nested dict; dqn supports one level of keys")
    return observations


def select(observations: Mapping[str, Any], index: int) -> Single:
    """Sample ``index`` of a batch, copied (numbers as arrays, text as ``str``)."""
    return {
        key: str(value[index]) if is_text(value) else np.array(value[index], copy=True)
        for key, value in observations.items()
    }


def take(observations: Mapping[str, Any], rows: np.ndarray) -> Batch:
    """The samples ``rows`` of a batch, as a batch (text as a tuple of ``str``)."""
    return {
        key: tuple(str(value[i]) for i in rows.tolist()) if is_text(value) else np.asarray(value)[rows]
        for key, value in observations.items()
    }


def stack(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """The batch of the given single samples (the inverse of :func:`select`)."""
    if not samples:
        raise ValueError("cannot stack an empty list of observations")
    keys = list(samples[0])
    return {
        key: tuple(str(s[key]) for s in samples)
        if isinstance(samples[0][key], str)
        else np.stack([np.asarray(s[key]) for s in samples])
        for key in keys
    }


def as_text_array(values: Any) -> np.ndarray:
    """A 1-D object array of ``str`` (safe for any string lengths, unlike ``<U`` arrays)."""
    array = np.empty(len(values), dtype=object)
    array[:] = [str(v) for v in values]
    return array
