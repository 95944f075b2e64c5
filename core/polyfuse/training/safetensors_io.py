"""Writing safetensors files straight from the tensors' memory, hashing as it writes.

``safetensors.torch.save_file`` turns every tensor into a ``bytes`` object
before writing: a full transient copy of the state on each save, which for
a replay buffer of tens of MB fragments the heap until resident memory
grows by megabytes per save. The format is simple (an 8-byte header length,
a JSON header, then the raw tensor bytes), so the tensors are written here
from views of their own memory, and their SHA-256 is taken on the same pass
rather than by reading the file back. Reading stays with the safetensors library.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
    **{getattr(torch, name): code for name, code in (
        ("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
        ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
    ) if hasattr(torch, name)},
}
_CHUNK = 1 << 24  # hash and write at most 16 MB at a time: no large temporaries anywhere


@dataclass(frozen=True)
class FileDigest:
    """What a manifest records of one file: its size and SHA-256."""

    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "bytes": self.bytes}


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> FileDigest:
    """Write ``tensors`` to ``path`` in the safetensors format without copying CPU tensors; returns its digest."""
    prepared = {name: _cpu_contiguous(name, tensor) for name, tensor in tensors.items()}
    # widest elements first, so every tensor starts at an offset aligned to its element size
    order = sorted(prepared, key=lambda name: (-prepared[name].element_size(), name))
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name in order:
        tensor = prepared[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for chunk in (struct.pack("<Q", len(blob)), blob):
            digest.update(chunk)
            file.write(chunk)
        for name in order:
            tensor = prepared[name]
            if tensor.numel() == 0:
                continue
            raw = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            for start in range(0, len(raw), _CHUNK):
                chunk = raw[start:start + _CHUNK]
                digest.update(chunk)
                file.write(chunk)
    return FileDigest(digest.hexdigest(), 8 + len(blob) + offset)


def write_bytes(path: Path, data: bytes) -> FileDigest:
    """Write ``data`` to ``path``; returns its digest."""
    path.write_bytes(data)
    return FileDigest(hashlib.sha256(data).hexdigest(), len(data))


def file_digest(path: Path) -> FileDigest:
    """Size and SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(digest.hexdigest(), size)


def _cpu_contiguous(name: str, tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"checkpoint tensor {name} has dtype {tensor.dtype}, which safetensors cannot store")
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return tensor if tensor.is_contiguous() else tensor.contiguous()
