"""Batches of dict observations with mixed modalities, as a rollout stores and replays them.

A batch maps each observation key to a numpy array whose first axis is the
batch (images, vectors, discrete values) or to a sequence (text: the tuple of
``str`` gymnasium's vector envs return for a ``Text`` space). Sequences are
handed back as tuples, the form the environments produce, so encoders see
minibatches exactly as they see live observations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def check_dict(observations: Any) -> Mapping[str, Any]:
    if not isinstance(observations, Mapping):
        raise TypeError(
            f"ppo needs dict observations (one key per modality), got {type(observations).__name__}; "
            "wrap the environment so that its observation space is a gymnasium Dict"
        )
    return observations


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def _object_array(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


class ObservationColumns:
    """A rollout's observations: ``T`` batches of ``N`` concatenated into ``T * N`` samples.

    Sample ``t * N + i`` is env ``i``'s observation at step ``t``, the order of
    ``tensor.reshape(-1)`` on ``(T, N)`` tensors.
    """

    def __init__(self, batches: Sequence[Mapping[str, Any]]) -> None:
        if not batches:
            raise ValueError("no observations to store")
        self._columns: dict[str, np.ndarray] = {}
        self._sequences: set[str] = set()
        for key, first in batches[0].items():
            if _is_sequence(first):
                self._columns[key] = _object_array([value for batch in batches for value in batch[key]])
                self._sequences.add(key)
            else:
                self._columns[key] = np.concatenate([np.asarray(batch[key]) for batch in batches])
        self.size = len(next(iter(self._columns.values())))

    def take(self, indices: np.ndarray) -> dict[str, Any]:
        return {
            key: tuple(column[indices].tolist()) if key in self._sequences else column[indices]
            for key, column in self._columns.items()
        }


def stack(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The batch of single observations (e.g. ``infos["final_obs"]`` entries): text as a tuple of ``str``."""
    keys = list(samples[0])
    return {
        key: tuple(s[key] for s in samples)
        if isinstance(samples[0][key], str)
        else np.stack([np.asarray(s[key]) for s in samples])
        for key in keys
    }
