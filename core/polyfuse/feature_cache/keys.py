"""What a cache entry is filed under: the namespace of an encoder's identity and the content hash of a sample."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from polyfuse.encoding import Encoder

_TEXT_KEYS: dict[str, str] = {}  # text -> content hash: repeated missions skip blake2b
_TEXT_KEYS_LIMIT = 1 << 16


def identity_namespace(encoder: Encoder) -> tuple[str, str]:
    """``(namespace, identity)`` of an encoder; raises ``NotImplementedError`` when it has no identity."""
    kind = type(encoder)
    identity = f"{kind.__module__}.{kind.__qualname__}:{encoder.identity()}"
    return hashlib.blake2b(identity.encode(), digest_size=16).hexdigest(), identity


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
