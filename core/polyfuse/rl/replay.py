"""A circular replay buffer of raw dict observations with mixed modalities.

Raw observations are stored, not features: encoders may be trainable, so
features computed when a transition was collected go stale. Numeric keys live
in preallocated numpy arrays (``np.zeros``, so untouched capacity costs no
memory on Linux); text keys in object arrays of ``str``. Each transition also
stores its next observation explicitly: with same-step autoreset and n-step
returns, "the next row" is not the next observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyfuse.observations import Batch, as_text_array, batch_length, is_text


@dataclass
class Transitions:
    """A batch of (n-step) transitions.

    ``actions`` are the environment's (as ``step`` took them). ``rewards``
    are the discounted sums over ``horizons`` steps; the TD target bootstraps
    with ``gamma ** horizons`` from ``next_observations`` unless
    ``terminated``. ``truncated``: the episode was cut (a time limit, or a
    resume) where the transition ends.
    """

    observations: Batch
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: Batch
    terminated: np.ndarray
    truncated: np.ndarray
    horizons: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)

    def bootstrap_discounts(self, gamma: float) -> np.ndarray:
        """``gamma ** horizon`` for each transition, 0 where the episode terminated (nothing to bootstrap from).

        A truncated episode still bootstraps: its final observation has a
        future the cut did not take away.
        """
        discounts = float(gamma) ** np.asarray(self.horizons, dtype=np.float64)
        return np.where(np.asarray(self.terminated, dtype=bool), 0.0, discounts)


_SCALARS = {"rewards": np.float32, "terminated": np.bool_, "truncated": np.bool_, "horizons": np.int64}


class ReplayBuffer:
    """Holds the last ``capacity`` transitions; sampled uniformly with replacement by ``rng``.

    The buffer's checkpoint holds its contents, not ``rng``: the generator
    belongs to (and is checkpointed by) whoever hands it over.
    """

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.rng = rng
        self.position = 0  # where the next transition is written
        self.size = 0
        self._text_keys: set[str] = set()
        self._observations: dict[str, np.ndarray] = {}
        self._next_observations: dict[str, np.ndarray] = {}
        self._columns: dict[str, np.ndarray] = {}  # actions and the scalars

    def __len__(self) -> int:
        return self.size

    def add(self, transitions: Transitions) -> None:
        """Append a batch of transitions, overwriting the oldest once full."""
        count = len(transitions)
        if count == 0:
            return
        for name, batch in (("observations", transitions.observations),
                            ("next_observations", transitions.next_observations)):
            if batch_length(batch) != count:
                raise ValueError(f"{name} hold {batch_length(batch)} samples for {count} actions")
        if not self._observations:
            self._allocate(transitions)
        elif set(transitions.observations) != set(self._observations):
            raise ValueError(
                f"observation keys changed from {sorted(self._observations)} "
                f"to {sorted(transitions.observations)}"
            )
        skip = max(0, count - self.capacity)  # more than fit: only the newest survive
        rows = (self.position + np.arange(count - skip)) % self.capacity
        for stored, batch in ((self._observations, transitions.observations),
                              (self._next_observations, transitions.next_observations)):
            for key, array in stored.items():
                value = batch[key]
                if key in self._text_keys:
                    array[rows] = as_text_array(value)[skip:]
                else:
                    array[rows] = np.asarray(value)[skip:]
        for name, array in self._columns.items():
            array[rows] = np.asarray(getattr(transitions, name))[skip:]
        self.position = int((self.position + count - skip) % self.capacity)
        self.size = min(self.capacity, self.size + count - skip)

    def sample(self, batch_size: int) -> Transitions:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        rows = self.rng.integers(0, self.size, size=batch_size)
        return self.gather(rows)

    def gather(self, rows: np.ndarray) -> Transitions:
        """The transitions stored at ``rows`` (copies)."""
        return Transitions(
            observations=self._read(self._observations, rows),
            next_observations=self._read(self._next_observations, rows),
            **{name: array[rows] for name, array in self._columns.items()},
        )

    def _read(self, stored: Mapping[str, np.ndarray], rows: np.ndarray) -> Batch:
        return {
            key: tuple(array[rows].tolist()) if key in self._text_keys else array[rows]
            for key, array in stored.items()
        }

    def _allocate(self, transitions: Transitions) -> None:
        observations = transitions.observations
        self._text_keys = {key for key, value in observations.items() if is_text(value)}
        for key, value in observations.items():
            if key in self._text_keys:
                self._observations[key] = np.full(self.capacity, "", dtype=object)
                self._next_observations[key] = np.full(self.capacity, "", dtype=object)
            else:
                value = np.asarray(value)
                self._observations[key] = np.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                self._next_observations[key] = np.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
        actions = np.asarray(transitions.actions)
        self._columns = {"actions": np.zeros((self.capacity, *actions.shape[1:]), dtype=actions.dtype)}
        self._columns.update({name: np.zeros(self.capacity, dtype=dtype) for name, dtype in _SCALARS.items()})

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer and its write position.

        Like ``torch.nn.Module.state_dict`` the arrays are views of the
        buffer: save them (or copy them) before adding more transitions.
        """
        filled = slice(0, self.size)
        return {
            "capacity": self.capacity,
            "position": self.position,
            "size": self.size,
            "text_keys": sorted(self._text_keys),
            "observations": {key: array[filled] for key, array in self._observations.items()},
            "next_observations": {key: array[filled] for key, array in self._next_observations.items()},
            **{name: array[filled] for name, array in self._columns.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved buffer; a buffer of another capacity keeps the newest transitions that fit."""
        self.position, self.size = 0, 0
        self._text_keys, self._observations, self._next_observations, self._columns = set(), {}, {}, {}
        size, capacity, position = int(state["size"]), int(state["capacity"]), int(state["position"])
        if size == 0:
            return
        if capacity == self.capacity:  # same layout: every row back in its place, so sampling repeats
            order = np.arange(size)
        else:  # oldest first (from the write position on once wrapped), so the newest survive
            order = np.concatenate([np.arange(position, size), np.arange(0, position)]) if size == capacity \
                else np.arange(size)
        text_keys = set(state["text_keys"])

        def columns(batch: Mapping[str, Any]) -> Batch:
            return {
                key: as_text_array(value)[order] if key in text_keys else np.asarray(value)[order]
                for key, value in batch.items()
            }

        self.add(
            Transitions(
                observations=columns(state["observations"]),
                next_observations=columns(state["next_observations"]),
                **{name: np.asarray(state[name])[order] for name in ("actions", *_SCALARS)},
            )
        )
        if capacity == self.capacity:
            self.position = position
