"""The cached encoder: a frozen encoder run only on samples whose features the cache lacks."""

from __future__ import annotations

import operator
import warnings
from copy import deepcopy
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from polyfuse.encoding import Encoder
from polyfuse.feature_cache.keys import identity_namespace, sample_keys
from polyfuse.feature_cache.store import COUNTERS, FeatureCache
from polyfuse.feature_cache.weights import Fingerprint, WeightsWatch

_REQUIRES_GRAD = operator.attrgetter("requires_grad")
_CPU = torch.device("cpu")


@dataclass
class CacheStats:
    """Per-sample counts of one cached encoder: ``hits`` were served without running the encoder
    (``memory_hits`` + ``disk_hits``; a repeat of a sample earlier in the same batch is a memory hit),
    ``misses`` were computed; ``corrupt`` disk entries were found bad and recomputed (also misses)."""

    hits: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt: int = 0

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def load(self, counts: dict[str, int]) -> None:
        """Continue from saved counts (a resumed run's ``cache/`` metrics do not restart from zero)."""
        for field in fields(self):
            if field.name in counts:
                setattr(self, field.name, int(counts[field.name]))


def take(batch: Any, indices: list[int]) -> Any:
    """The samples ``indices`` of a raw batch, in the batch's own type (what the encoder expects)."""
    if isinstance(batch, np.ndarray):
        return batch[np.asarray(indices, dtype=np.int64)]
    if isinstance(batch, torch.Tensor):
        return batch[torch.as_tensor(indices, dtype=torch.long, device=batch.device)]
    picked = [batch[i] for i in indices]
    return tuple(picked) if isinstance(batch, tuple) else picked


class CachedEncoder(Encoder):
    """A frozen encoder that runs only on samples whose features are in neither tier of the cache.

    ``forward(batch)`` hashes each sample, serves known ones from the cache,
    runs the wrapped encoder once on the distinct unknown ones (a sub-batch of
    the batch's own type: a list of ``str``, a numpy array, a tensor) and
    returns the ``(B, output_dim)`` features. The namespace is recomputed
    whenever a weight tensor is replaced or modified in place
    (``load_state_dict``, a target-network update; see :class:`WeightsWatch`),
    so features are never served for weights that no longer exist; if the
    encoder becomes trainable, or cannot name its identity, or a batch holds
    samples that cannot be hashed, the call goes straight to the encoder.

    :class:`~polyfuse.network.MultimodalNetwork` keeps the wrapped encoder in
    its module tree and this wrapper outside it, so state dicts and
    checkpoints are the same with and without the cache.
    """

    def __init__(self, encoder: Encoder, store: FeatureCache) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_dim = encoder.output_dim
        self.store = store
        self.stats = CacheStats()
        self._weights = WeightsWatch(encoder)
        self._fingerprint: Fingerprint | None = None  # of the weights self._namespace was computed for
        self._namespace: str | None = None
        self._uncacheable = False

    def __deepcopy__(self, memo: dict[int, Any]) -> CachedEncoder:
        copy = CachedEncoder(deepcopy(self.encoder, memo), self.store)
        copy.stats = deepcopy(self.stats, memo)
        return copy

    @property  # type: ignore[override]
    def modality(self) -> str:
        return self.encoder.modality

    @modality.setter
    def modality(self, value: str) -> None:
        self.encoder.modality = value

    @property
    def cacheable(self) -> bool:  # type: ignore[override]
        return getattr(self.encoder, "cacheable", True)

    def identity(self) -> str:
        return self.encoder.identity()

    @property
    def namespace(self) -> str | None:
        """The digest of the wrapped encoder's identity under which its features are stored."""
        return self._current_namespace()

    def forward(self, batch: Any) -> torch.Tensor:
        encoder = self.encoder
        if self._uncacheable or not getattr(encoder, "cacheable", True):
            return encoder(batch)
        namespace = self._current_namespace()
        if namespace is None:
            return encoder(batch)
        keys = sample_keys(batch)
        if not keys:
            return encoder(batch)
        return self._encode(batch, keys, namespace)

    def _current_namespace(self) -> str | None:
        """The namespace for the encoder's current weights; ``None`` while it is trainable or anonymous.

        ``identity()`` (which may hash every weight) runs only when the weights' fingerprint changed.
        """
        weights = self._weights
        fingerprint = weights.fingerprint()
        if any(map(_REQUIRES_GRAD, weights.params)):
            return None  # trainable now: its output changes with every update
        if fingerprint != self._fingerprint:
            try:
                namespace, identity = identity_namespace(self.encoder)
            except NotImplementedError:
                self._uncacheable = True
                warnings.warn(
                    f"{self.encoder.modality}: {type(self.encoder).__name__} is frozen but does not implement "
                    "identity(), so its features are not cached",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            self._namespace = namespace
            self._fingerprint = fingerprint
            if self.store.disk is not None:
                self.store.disk.describe(namespace, identity)
        return self._namespace

    def _encode(self, batch: Any, keys: list[str], namespace: str) -> torch.Tensor:
        """Look up each distinct key once (RL batches repeat a few missions many times), compute the misses."""
        store = self.store
        tensors = self._weights.tensors
        device = tensors[0].device if tensors else _CPU  # read each call: module.to() does not change versions
        distinct = list(dict.fromkeys(keys))
        counts = dict.fromkeys(COUNTERS, 0)
        counts["memory_hits"] = len(keys) - len(distinct)  # repeats within the batch: served without the encoder
        rows: list[torch.Tensor | None] = []
        missing: list[int] = []  # positions in ``distinct``
        for key in distinct:
            found, outcome = store.find(namespace, key, device)
            counts[outcome] += 1
            if found is None:
                missing.append(len(rows))
            rows.append(found)
        out_device = device
        if missing:
            first_sample = {key: index for index, key in reversed(list(enumerate(keys)))}
            with torch.no_grad():
                computed = self.encoder(take(batch, [first_sample[distinct[p]] for p in missing]))
            if computed.dim() != 2 or computed.shape[0] != len(missing):
                raise ValueError(
                    f"{self.encoder.modality}: {type(self.encoder).__name__} returned shape "
                    f"{tuple(computed.shape)} for a batch of {len(missing)}; expected ({len(missing)}, D)"
                )
            out_device = computed.device
            for position, row in zip(missing, computed.detach()):
                row = row.clone()  # a view would keep the whole sub-batch alive in the LRU
                rows[position] = row
                store.put(namespace, distinct[position], row)
        counts["misses"] += counts["corrupt"]
        self._count(counts)
        table = torch.stack(rows).to(out_device)  # type: ignore[arg-type]
        if len(distinct) == len(keys):
            return table
        position_of = {key: position for position, key in enumerate(distinct)}
        index = np.fromiter(map(position_of.__getitem__, keys), dtype=np.int64, count=len(keys))
        return table.index_select(0, torch.from_numpy(index).to(out_device))

    def _count(self, counts: dict[str, int]) -> None:
        stats = self.stats
        store_counts = self.store.counts
        for name, value in counts.items():
            setattr(stats, name, getattr(stats, name) + value)
            store_counts[name] += value
        stats.hits += counts["memory_hits"] + counts["disk_hits"]
