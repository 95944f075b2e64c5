"""The on-disk tier: one checksummed file per entry, written atomically, shared by any number of processes.

Entries are written to a temporary file and renamed into place (atomic on
POSIX), so a reader sees a whole entry or none; each file carries a checksum
over its key and contents, so a truncated, corrupted or misplaced entry is
detected, deleted and recomputed, never returned.

A failure costs what it touches: an entry that cannot be written (say, its
path was replaced by a directory) is repaired or skipped on its own, and only
a failure of the whole directory (a full or read-only disk, or every write
failing) stops this process's writes. Temporary files left by killed writers
are removed once they are old enough that no live writer can own them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAGIC = b"PFC1"
DIGEST_SIZE = 32
_HEADER_LENGTH = struct.Struct("<I")
CORRUPT = object()  # what DiskStore.load returns for a bad entry (already deleted)
TEMPORARY_PREFIX = ".tmp-"
STALE_TEMPORARY_SECONDS = 600.0  # a write takes milliseconds: older temporaries belong to dead writers
DIRECTORY_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # failures no other entry can escape
MAX_CONSECUTIVE_FAILURES = 32  # entry-level failures in a row that mean the directory itself is broken


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
        self._consecutive_failures = 0
        self._warned_entry = False
        self._swept: set[Path] = set()

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
        except OSError:  # a directory or an unreadable file where the entry belongs
            self._discard(path)
            return CORRUPT
        tensor = self._decode(data, namespace, key)
        if tensor is None:
            self._discard(path)
            return CORRUPT
        return tensor

    def _discard(self, path: Path) -> None:
        """Remove whatever occupies an entry's (or a fan-out folder's) path, so it can be written again."""
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            pass  # another process removed or replaced it first, or it cannot be removed: the write will tell

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
        """Write one entry; a failed write skips that entry (warned once), a full disk stops all saves."""
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
            self._make_parent(path)
            self._sweep(path.parent)
            if path.is_dir() and not path.is_symlink():
                self._discard(path)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:  # a bad entry, a full disk or a read-only directory must not stop training
            self._failed(path, exc)
        else:
            self._consecutive_failures = 0

    def _make_parent(self, path: Path) -> None:
        """Create the entry's folders, replacing a file that sits where one of them belongs."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            for folder in reversed(path.parent.relative_to(self.directory).parents[:-1]):
                self._discard_file(self.directory / folder)
            self._discard_file(path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)

    def _discard_file(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            self._discard(path)

    def _sweep(self, folder: Path) -> None:
        """Once per folder and process: delete temporaries that no live writer can still own."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for temporary in folder.glob(f"{TEMPORARY_PREFIX}*"):
            try:
                if temporary.lstat().st_mtime < cutoff:
                    temporary.unlink()
            except OSError:
                pass  # removed by another process's sweep

    def _failed(self, path: Path, exc: OSError) -> None:
        """Skip one entry, or stop writing when the failure is the directory's rather than the entry's."""
        self._consecutive_failures += 1
        if exc.errno in DIRECTORY_ERRORS or self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self._write_failed = True
            warnings.warn(
                f"feature cache: cannot write to {self.directory} ({exc}); features are no longer saved "
                "to disk in this process (free space or set feature_cache.directory to a writable folder)",
                RuntimeWarning,
                stacklevel=3,
            )
        elif not self._warned_entry:
            self._warned_entry = True
            warnings.warn(
                f"feature cache: cannot write entry {path} ({exc}); it is recomputed when needed and other "
                "entries are still saved (remove that path if the warning recurs)",
                RuntimeWarning,
                stacklevel=3,
            )
