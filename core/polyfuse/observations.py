"""Batches of dict observations with mixed modalities: numeric arrays and text.

A batch maps each observation key to either a numpy array whose first axis is
the batch (images, vectors, discrete values) or a sequence of strings (text:
the tuple gymnasium's vector envs return for a ``Text`` space, a list, or a
numpy array of ``str``). Text is always handed back as a tuple of ``str``,
the form the environments produce, so encoders see stored batches (replay,
rollouts, datasets) exactly as they see live ones.
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


def check_dict(observations: Any, who: str = "polyfuse") -> Mapping[str, Any]:
    """``observations`` if it is a one-level dict batch, else a TypeError saying how to fix the environment."""
    if not isinstance(observations, Mapping):
        raise TypeError(
            f"{who} needs dict observations (one key per modality), got {type(observations).__name__}; "
            "wrap the environment so that its observation space is a gymnasium Dict"
        )
    for key, value in observations.items():
        if isinstance(value, Mapping):
            raise TypeError(f"observation key {key!r} holds a nested dict; {who} supports one level of keys")
    return observations


def as_text_array(values: Any) -> np.ndarray:
    """A 1-D object array of ``str`` (safe for any string lengths, unlike ``<U`` arrays)."""
    array = np.empty(len(values), dtype=object)
    array[:] = [str(v) for v in values]
    return array


def copy_batch(observations: Mapping[str, Any]) -> Batch:
    """A batch that later environment steps cannot change (arrays copied; text is immutable)."""
    return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in observations.items()}


def select(observations: Mapping[str, Any], index: int) -> Single:
    """Sample ``index`` of a batch, copied (numbers as arrays, text as ``str``)."""
    return {
        key: str(value[index]) if is_text(value) else np.array(value[index], copy=True)
        for key, value in observations.items()
    }


def take(observations: Mapping[str, Any], rows: np.ndarray) -> Batch:
    """The samples ``rows`` of a batch, as a batch (text as a tuple of ``str``)."""
    return {
        key: tuple(str(value[i]) for i in np.asarray(rows).tolist()) if is_text(value) else np.asarray(value)[rows]
        for key, value in observations.items()
    }


def stack(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """The batch of the given single samples (the inverse of :func:`select`)."""
    if not samples:
        raise ValueError("cannot stack an empty list of observations")
    return {
        key: tuple(str(s[key]) for s in samples)
        if isinstance(samples[0][key], str)
        else np.stack([np.asarray(s[key]) for s in samples])
        for key in samples[0]
    }


def concatenate(batches: Sequence[Mapping[str, Any]]) -> Batch:
    """One batch of the given batches one after the other (text as a tuple of ``str``)."""
    if not batches:
        raise ValueError("cannot concatenate an empty list of batches")
    return {
        key: tuple(str(v) for batch in batches for v in batch[key])
        if is_text(first)
        else np.concatenate([np.asarray(batch[key]) for batch in batches])
        for key, first in batches[0].items()
    }


class ObservationColumns:
    """Stored observations as columns (arrays; text as object arrays), read back as batches by row.

    Rollouts, replay and datasets keep observations this way: ``take(rows)``
    gives the batch an encoder expects.
    """

    def __init__(self, batch: Mapping[str, Any]) -> None:
        self._text = {key for key, value in batch.items() if is_text(value)}
        self._columns = {
            key: as_text_array(value) if key in self._text else np.asarray(value) for key, value in batch.items()
        }
        self.size = batch_length(self._columns)

    @classmethod
    def of_batches(cls, batches: Sequence[Mapping[str, Any]]) -> ObservationColumns:
        """The columns of ``T`` batches of ``N``: row ``t * N + i`` is sample ``i`` of batch ``t``."""
        return cls(concatenate(batches))

    def __len__(self) -> int:
        return self.size

    def take(self, rows: np.ndarray) -> Batch:
        return {
            key: tuple(column[rows].tolist()) if key in self._text else column[rows]
            for key, column in self._columns.items()
        }

    def all(self) -> Batch:
        """Every row, as one batch."""
        return {key: tuple(column.tolist()) if key in self._text else column for key, column in self._columns.items()}
