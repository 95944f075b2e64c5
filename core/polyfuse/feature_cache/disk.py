"""The on-disk tier: one checksummed file per entry, written atomically, shared by any number of processes.

Entries are written to a temporary file and renamed into place (atomic on
POSIX), so a reader sees a whole entry or none; each file carries a checksum
over its key and contents, so a truncated, corrupted or misplaced entry is
detected, deleted and recomputed, never returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAGIC = b"PFC1"
DIGEST_SIZE = 32
_HEADER_LENGTH = struct.Struct("<I")
CORRUPT = object()  # what DiskStore.load returns for a bad entry (already deleted)


def _digest(*parts: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for part in parts:
        digest.update(part)
    return digest.digest()


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
        """The stored tensor, ``None`` if absent, or the :data:`CORRUPT` marker (the bad file is removed)."""
        path = self.path(namespace, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return CORRUPT
        tensor = self._decode(data, namespace, key)
        if tensor is None:
            try:
                path.unlink()
            except OSError:
                pass  # another process removed or replaced it first
            return CORRUPT
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
        """Write one entry; after a failed write (a full disk) this process only warns once and stops saving."""
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
