"""The cache of one process: an in-memory LRU in front of an optional shared directory."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from polyfuse.feature_cache.disk import CORRUPT, DiskStore

COUNTERS = ("memory_hits", "disk_hits", "misses", "corrupt")


class FeatureCache:
    """The in-memory LRU of one process, in front of an optional :class:`DiskStore`.

    Entries are keyed by ``(namespace, key)``: the namespace digests an
    encoder's identity, the key a sample's content (:func:`sample_keys`).
    Networks built from the same cache settings share one cache (see
    :func:`shared_store`): an RL optimizer's online and target networks then
    compute each frozen feature once between them. ``stats()`` counts per
    sample looked up: ``memory_hits``, ``disk_hits``, ``misses`` and
    ``corrupt`` (bad disk entries, deleted and also counted as misses).
    """

    def __init__(self, memory_items: int, directory: Path | None = None) -> None:
        if memory_items < 0:
            raise ValueError(f"memory_items must be >= 0, got {memory_items}")
        self.memory_items = memory_items
        self.disk = DiskStore(directory) if directory is not None else None
        self._memory: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.evictions = 0
        self.counts = dict.fromkeys(COUNTERS, 0)

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, entry: tuple[str, str]) -> bool:
        return entry in self._memory

    def __deepcopy__(self, memo: dict[int, Any]) -> FeatureCache:
        return self  # a handle on shared storage: copies of a network keep sharing it

    def __reduce__(self) -> tuple[Any, ...]:
        directory = self.disk.directory if self.disk is not None else None
        return shared_store, (self.memory_items, directory)

    def stats(self) -> dict[str, int]:
        """Counts since creation: ``memory_hits``, ``disk_hits``, ``misses``, ``corrupt``, ``evictions``."""
        return {**self.counts, "evictions": self.evictions}

    def get(self, namespace: str, key: str) -> torch.Tensor | None:
        """The features stored under ``(namespace, key)`` (memory first, then disk), or ``None``."""
        found, outcome = self.find(namespace, key)
        self.counts[outcome] += 1
        if outcome == "corrupt":
            self.counts["misses"] += 1
        return found

    def put(self, namespace: str, key: str, tensor: torch.Tensor) -> None:
        """Store one sample's features in memory and, with a directory, on disk."""
        self.put_memory(namespace, key, tensor)
        if self.disk is not None:
            self.disk.save(namespace, key, tensor)

    def find(self, namespace: str, key: str, device: torch.device | None = None) -> tuple[torch.Tensor | None, str]:
        """``(features or None, outcome)`` without counting; outcome is one of :data:`COUNTERS`."""
        memory = self._memory
        entry = memory.get((namespace, key))
        if entry is not None:
            memory.move_to_end((namespace, key))
            return entry, "memory_hits"
        if self.disk is None:
            return None, "misses"
        loaded = self.disk.load(namespace, key)
        if loaded is CORRUPT:
            return None, "corrupt"
        if loaded is None:
            return None, "misses"
        if device is not None:
            loaded = loaded.to(device)
        self.put_memory(namespace, key, loaded)
        return loaded, "disk_hits"

    def put_memory(self, namespace: str, key: str, tensor: torch.Tensor) -> None:
        """Store in memory only (an entry just read from disk), evicting the least recently used."""
        if self.memory_items == 0:
            return
        memory = self._memory
        memory[(namespace, key)] = tensor
        memory.move_to_end((namespace, key))
        while len(memory) > self.memory_items:
            memory.popitem(last=False)
            self.evictions += 1


_STORES: weakref.WeakValueDictionary[tuple[int, str | None], FeatureCache] = weakref.WeakValueDictionary()


def shared_store(memory_items: int, directory: Path | str | None = None) -> FeatureCache:
    """The process's cache for these settings, created on first use and freed with its last network."""
    resolved = Path(directory).expanduser().resolve() if directory is not None else None
    handle = (memory_items, str(resolved) if resolved is not None else None)
    store = _STORES.get(handle)
    if store is None:
        store = FeatureCache(memory_items, resolved)
        _STORES[handle] = store
    return store
