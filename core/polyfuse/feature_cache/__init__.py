"""Features of frozen encoders, computed once per distinct input.

A frozen encoder is a pure function of its input, and RL revisits the same
inputs constantly (BabyAI has a few dozen mission strings over 100k steps), so
each sample's features are stored under ``(namespace, content hash)``: the
namespace digests the encoder's :meth:`~polyfuse.encoding.Encoder.identity`
(architecture, preprocessing, weights), the content hash the raw sample.
Trainable encoders are never cached: their output changes with every update.

Two tiers: an in-memory LRU per process and an optional directory that any
number of processes share. Entries are written to a temporary file and
renamed into place (atomic on POSIX), so a reader sees a whole entry or none;
each file carries a checksum over its key and contents, so a truncated,
corrupted or misplaced entry is detected, deleted and recomputed, never returned.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import os
import struct
import tempfile
import warnings
import weakref
from copy import deepcopy as _deepcopy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyfuse.encoding import Encoder

MAGIC = b"PFC1"
DIGEST_SIZE = 32
_HEADER_LENGTH = struct.Struct("<I")
_CORRUPT = object()


def _digest(*parts: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


_TEXT_KEYS: dict[str, str] = {}  # text -> content hash: repeated missions skip blake2b
_TEXT_KEYS_LIMIT = 1 << 16


def _text_key(text: str) -> str:
    key = _TEXT_KEYS.get(text)
    if key is None:
        key = hashlib.blake2b(b"str:" + text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        if len(_TEXT_KEYS) >= _TEXT_KEYS_LIMIT or len(text) > 4096:
            if len(text) > 4096:
                return key
            _TEXT_KEYS.clear()
        _TEXT_KEYS[text] = key
    return key


def _sample_key(sample: Any) -> str | None:
    """Content hash of one raw sample; ``None`` for a type the cache cannot hash."""
    if isinstance(sample, str):
        return _text_key(sample)
    if hasattr(sample, "getbands"):  # a PIL image
        header = f"pil:{sample.mode}:{sample.size};".encode()
        return hashlib.blake2b(header + sample.tobytes(), digest_size=16).hexdigest()
    if isinstance(sample, torch.Tensor):
        sample = sample.detach().cpu().numpy()
    if isinstance(sample, (np.ndarray, np.generic)) and sample.dtype.kind in "biuf":
        array = np.ascontiguousarray(sample)
        header = f"array:{array.dtype.str}:{array.shape};".encode()
        return hashlib.blake2b(header + array.tobytes(), digest_size=16).hexdigest()
    return None


def sample_keys(batch: Any) -> list[str] | None:
    """One content hash per sample of a raw batch, or ``None`` when some sample cannot be hashed."""
    if isinstance(batch, (np.ndarray, torch.Tensor)) and batch.ndim == 0:
        return None
    if isinstance(batch, np.ndarray) and batch.dtype == object and batch.ndim == 1:
        batch = batch.tolist()
    if isinstance(batch, (list, tuple)):
        get = _TEXT_KEYS.get
        keys = [get(text) if type(text) is str else None for text in batch]
        if None not in keys:
            return keys  # every text seen before: the hot path of repeated missions
    try:
        samples: Sequence[Any] = batch if isinstance(batch, (np.ndarray, torch.Tensor)) else list(batch)
    except TypeError:
        return None
    keys = []
    for sample in samples:
        key = _sample_key(sample)
        if key is None:
            return None
        keys.append(key)
    return keys


def take(batch: Any, indices: list[int]) -> Any:
    """The samples ``indices`` of a raw batch, in the batch's own type (what the encoder expects)."""
    if isinstance(batch, np.ndarray):
        return batch[np.asarray(indices, dtype=np.int64)]
    if isinstance(batch, torch.Tensor):
        return batch[torch.as_tensor(indices, dtype=torch.long, device=batch.device)]
    picked = [batch[i] for i in indices]
    return tuple(picked) if isinstance(batch, tuple) else picked


class DiskStore:
    """One file per entry: ``directory/<namespace>/<key[:2]>/<key>.pfc``, safe to share between processes.

    File layout: magic, header length, JSON header (dtype, shape), raw
    tensor bytes, then a blake2b checksum of namespace, key and everything before it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._write_failed = False

    def path(self, namespace: str, key: str) -> Path:
        return self.directory / namespace / key[:2] / f"{key}.pfc"

    def describe(self, namespace: str, identity: str) -> None:
        """Record the identity a namespace digests, for people browsing the directory."""
        path = self.directory / namespace / "identity.txt"
        if not path.exists():
            self._write_atomic(path, identity.encode("utf-8"))

    def load(self, namespace: str, key: str) -> Any:
        """The stored tensor, ``None`` if absent, or the ``_CORRUPT`` marker (the bad file is removed)."""
        path = self.path(namespace, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return _CORRUPT
        tensor = self._decode(data, namespace, key)
        if tensor is None:
            try:
                path.unlink()
            except OSError:
                pass  # another process removed or replaced it first
            return _CORRUPT
        return tensor

    @staticmethod
    def _decode(data: bytes, namespace: str, key: str) -> torch.Tensor | None:
        fixed = len(MAGIC) + _HEADER_LENGTH.size
        if len(data) < fixed + DIGEST_SIZE or not data.startswith(MAGIC):
            return None
        body, checksum = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
        if _digest(namespace.encode(), key.encode(), body) != checksum:
            return None
        (header_length,) = _HEADER_LENGTH.unpack_from(body, len(MAGIC))
        try:
            header = json.loads(body[fixed : fixed + header_length])
            dtype = getattr(torch, header["dtype"])
            shape = tuple(int(n) for n in header["shape"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        payload = bytearray(body[fixed + header_length :])
        if not isinstance(dtype, torch.dtype) or len(payload) != dtype.itemsize * int(np.prod(shape)):
            return None
        if not payload:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(payload, dtype=torch.uint8).view(dtype).reshape(shape)

    def save(self, namespace: str, key: str, tensor: torch.Tensor) -> None:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        header = json.dumps({"dtype": str(flat.dtype).removeprefix("torch."), "shape": list(tensor.shape)})
        header_bytes = header.encode()
        payload = flat.view(torch.uint8).numpy().tobytes()
        body = MAGIC + _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + payload
        self._write_atomic(self.path(namespace, key), body + _digest(namespace.encode(), key.encode(), body))

    def _write_atomic(self, path: Path, data: bytes) -> None:
        if self._write_failed:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:  # a full disk or a read-only directory must not stop training
            self._write_failed = True
            warnings.warn(
                f"feature cache: cannot write to {self.directory} ({exc}); features are no longer saved "
                "to disk in this process (set feature_cache.directory to a writable folder)",
                RuntimeWarning,
                stacklevel=2,
            )


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
        if loaded is _CORRUPT:
            return None, "corrupt"
        if loaded is None:
            return None, "misses"
        if device is not None:
            loaded = loaded.to(device)
        self.put_memory(namespace, key, loaded)
        return loaded, "disk_hits"

    def get_memory(self, namespace: str, key: str) -> torch.Tensor | None:
        entry = self._memory.get((namespace, key))
        if entry is not None:
            self._memory.move_to_end((namespace, key))
        return entry

    def put_memory(self, namespace: str, key: str, tensor: torch.Tensor) -> None:
        if self.memory_items == 0:
            return
        memory = self._memory
        memory[(namespace, key)] = tensor
        memory.move_to_end((namespace, key))
        while len(memory) > self.memory_items:
            memory.popitem(last=False)
            self.evictions += 1


FeatureStore = FeatureCache  # the earlier name

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


_REGISTRATIONS = [0]  # bumped whenever any module registers a parameter, buffer or submodule


def _registered(*args: Any) -> None:
    _REGISTRATIONS[0] += 1


_modules_api = torch.nn.modules.module
_modules_api.register_module_parameter_registration_hook(_registered)
_modules_api.register_module_buffer_registration_hook(_registered)
_modules_api.register_module_module_registration_hook(_registered)


_REQUIRES_GRAD = operator.attrgetter("requires_grad")
_VERSION = operator.attrgetter("_version")


def identity_namespace(encoder: Encoder) -> tuple[str, str]:
    """``(namespace, identity)`` of an encoder; raises ``NotImplementedError`` when it has no identity."""
    kind = type(encoder)
    identity = f"{kind.__module__}.{kind.__qualname__}:{encoder.identity()}"
    return hashlib.blake2b(identity.encode(), digest_size=16).hexdigest(), identity


class CachedEncoder(Encoder):
    """A frozen encoder that runs only on samples whose features are in neither tier of the cache.

    ``forward(batch)`` hashes each sample, serves known ones from the cache,
    runs the wrapped encoder once on the distinct unknown ones (a sub-batch of
    the batch's own type: a list of ``str``, a numpy array, a tensor) and
    returns the ``(B, output_dim)`` features. The namespace is recomputed
    whenever a weight tensor is replaced or modified in place
    (``load_state_dict``, a target-network update), so features are never
    served for weights that no longer exist; if the encoder becomes trainable,
    or cannot name its identity, or a batch holds samples that cannot be
    hashed, the call goes straight to the encoder.

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
        self._fingerprint: int | None = None
        self._namespace: str | None = None
        self._uncacheable = False
        self._registrations = -1
        self._params: list[torch.Tensor] = []
        self._tensors: list[torch.Tensor] | None = None
        self._device = torch.device("cpu")

    def __deepcopy__(self, memo: dict[int, Any]) -> CachedEncoder:
        copy = CachedEncoder(_deepcopy(self.encoder, memo), self.store)
        copy.stats = _deepcopy(self.stats, memo)
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

        The hot path reads only the ``_version`` and ``requires_grad`` of the tensors
        collected last time; they are collected again whenever any module in the
        process registers a parameter, buffer or submodule (a replaced weight).
        """
        if self._tensors is None or self._registrations != _REGISTRATIONS[0]:
            self._registrations = _REGISTRATIONS[0]
            self._params = list(self.encoder.parameters())
            self._tensors = self._params + list(self.encoder.buffers())
            self._device = self._tensors[0].device if self._tensors else torch.device("cpu")
            self._fingerprint = None
        if any(map(_REQUIRES_GRAD, self._params)):
            return None  # trainable now: its output changes with every update
        fingerprint = sum(map(_VERSION, self._tensors))  # versions only grow: any in-place change shows
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
        distinct = list(dict.fromkeys(keys))
        counts = dict.fromkeys(COUNTERS, 0)
        counts["memory_hits"] = len(keys) - len(distinct)  # repeats within the batch: served without the encoder
        rows: list[torch.Tensor | None] = []
        missing: list[int] = []  # positions in ``distinct``
        for key in distinct:
            found, outcome = store.find(namespace, key, self._device)
            counts[outcome] += 1
            if found is None:
                missing.append(len(rows))
            rows.append(found)
        out_device = self._device
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
