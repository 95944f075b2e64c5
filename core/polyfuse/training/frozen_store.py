"""Frozen encoders stored once, by identity, beside the checkpoints that refer to them.

A frozen sentence-transformer is 90 MB that never changes, yet sits in every
network's ``state_dict()``: rewriting it on each save halved throughput while
saving. Each frozen module is filed under ``checkpoint.frozen/<digest>.safetensors``,
the digest naming its class, configuration and weights (the identity the
feature cache already uses, or a digest of its tensors), written the first
time and reused by every later save. Checkpoints refer to its tensors as
``@frozen/<digest>/<name>`` and record the file's SHA-256 in their manifest,
which loading checks like any other file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from polyfuse.encoding import weights_digest
from polyfuse.training.safetensors_io import FileDigest, file_digest, write_safetensors

FROZEN_DIR = "checkpoint.frozen"
REFERENCE_PREFIX = "@frozen/"

TensorKey = tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype, str]
_DIGESTS: dict[tuple[str, int, int], FileDigest] = {}  # (path, size, mtime) -> digest: hash a reused file once


def tensor_key(tensor: torch.Tensor) -> TensorKey:
    """Identifies a tensor by the memory it views, so a ``state_dict()`` entry is matched without reading it."""
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype, str(tensor.device))


def module_digest(module: nn.Module) -> str:
    """A digest of a frozen module's class, configuration and weights."""
    try:
        identity = module.identity()  # type: ignore[operator]  # an Encoder's: name, config, weights digest
    except (AttributeError, NotImplementedError, TypeError):
        identity = weights_digest(module)
    kind = type(module)
    return hashlib.blake2b(f"{kind.__module__}.{kind.__qualname__}:{identity}".encode(), digest_size=16).hexdigest()


def store_frozen(output_dir: Path, modules: Iterable[nn.Module]) -> tuple[dict[TensorKey, str], dict[str, FileDigest]]:
    """Write each module not yet stored; returns the references to use for its tensors and the files' digests."""
    references: dict[TensorKey, str] = {}
    files: dict[str, FileDigest] = {}
    folder = output_dir / FROZEN_DIR
    for module in modules:
        digest = module_digest(module)
        state = module.state_dict(keep_vars=False)
        if digest not in files:
            files[digest] = _stored(folder, digest, state)
        for name, tensor in state.items():
            references.setdefault(tensor_key(tensor), f"{REFERENCE_PREFIX}{digest}/{name}")
    return references, files


def frozen_path(output_dir: Path, digest: str) -> Path:
    return output_dir / FROZEN_DIR / f"{digest}.safetensors"


def _holds(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """Whether a stored file holds exactly these tensors (a damaged one is written again)."""
    try:
        stored = load_file(str(path))
    except Exception:  # noqa: BLE001 - any unreadable file is simply replaced
        return False
    return stored.keys() == state.keys() and all(
        stored[name].dtype == tensor.dtype and torch.equal(stored[name], tensor.detach().cpu())
        for name, tensor in state.items()
    )


def _stored(folder: Path, digest: str, state: dict[str, torch.Tensor]) -> FileDigest:
    path = folder / f"{digest}.safetensors"
    if path.is_file():
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo in _DIGESTS:
            return _DIGESTS[memo]
        if _holds(path, state):  # written by an earlier session: checked once, then trusted by its digest
            _DIGESTS[memo] = file_digest(path)
            return _DIGESTS[memo]
    folder.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    result = write_safetensors(staging, state, {"format": "polyfuse-frozen", "digest": digest})
    with open(staging, "rb") as file:
        os.fsync(file.fileno())  # durable before any checkpoint refers to it
    os.replace(staging, path)
    stat = path.stat()
    _DIGESTS[(str(path), stat.st_size, stat.st_mtime_ns)] = result
    return result
