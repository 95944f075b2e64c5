"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A nested state (dicts, lists, tuples, tensors, numpy arrays, JSON values) is
split into ``checkpoint.safetensors`` (every tensor and numeric array, under
its path in the state) and ``checkpoint.json`` (the structure, with
references to those tensors, and every other value). Loading cannot run
code, so checkpoints from anyone are safe to open.

Both files live in ``<output_dir>/checkpoint/`` with ``manifest.json``
(their sizes and SHA-256, and those of the frozen encoders' files they
refer to, see :mod:`polyfuse.training.frozen_store`), written into a
temporary folder and swapped in with ``os.replace``; the previous ones move
to ``checkpoint.1``, ``checkpoint.2``. Loading checks every hash and refuses
non-finite tensors, so a truncated, altered or diverged checkpoint is
named and skipped for the previous intact one instead of resuming garbage.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from polyfuse.errors import PolyfuseError
from polyfuse.training.frozen_store import (
    FROZEN_DIR,
    REFERENCE_PREFIX,
    TensorKey,
    frozen_path,
    store_frozen,
    tensor_key,
)
from polyfuse.training.safetensors_io import file_digest, write_bytes, write_safetensors

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"
MANIFEST_FILE = "manifest.json"
KEEP = 3
"""Checkpoints kept: the newest and the two before it, to fall back on when the newest is damaged."""
MAX_KEEP = 10
_MARKERS = ("__tensor__", "__ndarray__", "__textarray__", "__tuple__", "__dict__")


def flatten_state(
    state: Any, shared: Mapping[TensorKey, str] | None = None, used: set[str] | None = None
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON-able tree and the tensors it references by name.

    The tensors are the state's own (views, not copies: write them before the
    state changes). A tensor found in ``shared`` (a frozen encoder's, see
    :mod:`polyfuse.training.frozen_store`) is referenced by that name
    instead, and the name is added to ``used``.
    """
    tensors: dict[str, torch.Tensor] = {}
    used = used if used is not None else set()

    def tensor_ref(tensor: torch.Tensor, path: list[str]) -> str:
        name = "/".join(path) or "root"
        unique, n = name, 1
        while unique in tensors:
            unique, n = f"{name}#{n}", n + 1
        tensors[unique] = tensor
        return unique

    def encode(value: Any, path: list[str]) -> Any:
        if isinstance(value, torch.Tensor):
            reference = shared.get(tensor_key(value)) if shared else None
            if reference is not None:
                used.add(reference)
                return {"__tensor__": reference}
            return {"__tensor__": tensor_ref(value.detach(), path)}
        if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "OUS":
            if isinstance(value, np.generic):
                return encode(value.item(), path)
            items = value.tolist()
            if not _all_text(items):  # objects other than strings: check and convert each
                items = encode(items, path)
            return {"__textarray__": items, "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return {"__ndarray__": tensor_ref(torch.from_numpy(np.array(value)), path), "scalar": True}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": tensor_ref(_as_tensor(value), path)}
        if isinstance(value, Mapping):
            keys = list(value)
            if all(isinstance(k, str) and not k.startswith("__") for k in keys):
                return {k: encode(value[k], [*path, k]) for k in keys}
            return {"__dict__": [[encode(k, path), encode(value[k], [*path, str(k)])] for k in keys]}
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v, [*path, str(i)]) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, [*path, str(i)]) for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        where = ".".join(path) or "the top level"
        raise TypeError(
            f"checkpoint state at {where} is a {type(value).__name__}; state_dict() may hold only "
            "tensors, numpy arrays, dicts, lists, tuples and JSON values (str, int, float, bool, None)"
        )

    return encode(state, []), tensors


def unflatten_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild the state :func:`flatten_state` split."""

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        marker = next((m for m in _MARKERS if m in node), None)
        if marker == "__tensor__":
            return tensors[node["__tensor__"]]
        if marker == "__ndarray__":
            array = tensors[node["__ndarray__"]].numpy()
            return array[()] if node.get("scalar") else array
        if marker == "__textarray__":
            return np.array(decode(node["__textarray__"]), dtype=np.dtype(node["dtype"]))
        if marker == "__tuple__":
            return tuple(decode(v) for v in node["__tuple__"])
        if marker == "__dict__":
            return {_hashable(decode(k)): decode(v) for k, v in node["__dict__"]}
        return {k: decode(v) for k, v in node.items()}

    return decode(tree)


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def _all_text(items: Any) -> bool:
    """Whether a nested list holds only strings (a replay buffer's questions: no need to visit each)."""
    if isinstance(items, str):
        return True
    if not isinstance(items, list):
        return False
    if items and isinstance(items[0], list):
        return all(_all_text(item) for item in items)
    return all(type(item) is str for item in items)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor viewing ``array``'s memory (a copy only for arrays that are strided or read-only)."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class DamagedCheckpoint(PolyfuseError):
    """A checkpoint folder that fails its checks (hashes, format, finite values); names the file and cause."""


# -- saving -------------------------------------------------------------------------------------------


def save_checkpoint(
    output_dir: Path, state: Any, *, frozen: Iterable[nn.Module] = (), keep: int = KEEP
) -> Path:
    """Write ``state`` to ``output_dir/checkpoint/`` atomically, keeping the ``keep - 1`` previous ones.

    ``frozen`` modules (frozen encoders) are stored once beside the checkpoints
    and their tensors referenced, not rewritten. Returns the new checkpoint's folder.
    """
    references, frozen_files = store_frozen(output_dir, frozen) if frozen else ({}, {})
    hits: set[str] = set()
    tree, tensors = flatten_state(state, references, hits)
    used = {reference.split("/")[1] for reference in hits}
    staging = output_dir / f"{CHECKPOINT_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    metadata = {"format": "polyfuse", "version": str(FORMAT_VERSION)}
    files = {TENSORS_FILE: write_safetensors(staging / TENSORS_FILE, tensors, metadata)}
    del tensors
    text = json.dumps({"polyfuse_checkpoint": FORMAT_VERSION, "state": tree}, allow_nan=True)
    files[STATE_FILE] = write_bytes(staging / STATE_FILE, text.encode("utf-8"))
    del text
    manifest = {
        "polyfuse_checkpoint": FORMAT_VERSION,
        "files": {name: digest.as_dict() for name, digest in files.items()},
        "frozen": {digest: frozen_files[digest].as_dict() for digest in sorted(used)},
    }
    write_bytes(staging / MANIFEST_FILE, json.dumps(manifest, indent=1).encode("utf-8"))
    for name in (*files, MANIFEST_FILE):
        _fsync(staging / name)
    _rotate(output_dir, staging, max(keep, 1))
    return output_dir / CHECKPOINT_DIR


def _rotate(output_dir: Path, staging: Path, keep: int) -> None:
    """Shift ``checkpoint`` → ``checkpoint.1`` → … and move ``staging`` in; each step is one rename."""
    names = checkpoint_names(keep)
    shutil.rmtree(output_dir / names[-1], ignore_errors=True)
    for older, newer in zip(reversed(names[1:]), reversed(names[:-1])):
        if (output_dir / newer).exists():
            shutil.rmtree(output_dir / older, ignore_errors=True)
            os.replace(output_dir / newer, output_dir / older)
    os.replace(staging, output_dir / CHECKPOINT_DIR)
    for stale in [f"{CHECKPOINT_DIR}.old", *checkpoint_names(MAX_KEEP)[keep:]]:
        shutil.rmtree(output_dir / stale, ignore_errors=True)
    _fsync(output_dir)


def checkpoint_names(keep: int = KEEP) -> list[str]:
    """Folder names of the kept checkpoints, newest first: ``checkpoint``, ``checkpoint.1``, …"""
    return [CHECKPOINT_DIR, *(f"{CHECKPOINT_DIR}.{i}" for i in range(1, keep))]


CHECKPOINT_PATHS = (*checkpoint_names(MAX_KEEP), f"{CHECKPOINT_DIR}.tmp", f"{CHECKPOINT_DIR}.old", FROZEN_DIR)
"""Every path in an output_dir that checkpoints use (a fresh run removes them)."""


# -- loading ------------------------------------------------------------------------------------------


def checkpoint_location(output_dir: Path) -> Path | None:
    """The newest checkpoint folder completely written and with an intact JSON part, or None.

    Cheap (the tensors are not read): for reading a run's config or step with
    :func:`read_checkpoint_tree`. :func:`load_latest_checkpoint` checks everything.
    """
    for name in checkpoint_names(MAX_KEEP):
        candidate = output_dir / name
        if not (candidate / TENSORS_FILE).is_file():
            continue
        try:
            _check_file(candidate / STATE_FILE, _read_manifest(candidate)["files"][STATE_FILE])
        except DamagedCheckpoint:
            continue
        return candidate
    return None


def read_checkpoint_tree(location: Path) -> Any:
    """The JSON part of a checkpoint (cheap: no tensors), still with tensor references."""
    try:
        data = json.loads((location / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise DamagedCheckpoint(
            f"cannot read checkpoint {location / STATE_FILE}: {type(exc).__name__}: {_short(exc)}"
        ) from None
    if not isinstance(data, dict) or data.get("polyfuse_checkpoint") != FORMAT_VERSION or "state" not in data:
        raise DamagedCheckpoint(
            f"{location / STATE_FILE} is not a polyfuse checkpoint of format {FORMAT_VERSION}; "
            "start a new run in another output_dir"
        )
    return data["state"]


def load_checkpoint(location: Path, required: Iterable[str] = ()) -> Any:
    """Read and check a checkpoint folder written by :func:`save_checkpoint`.

    Every file's SHA-256 must match the manifest, every tensor the JSON names
    must exist, every floating-point tensor must be finite, and the state
    must hold the ``required`` top-level keys; otherwise :class:`DamagedCheckpoint`
    names the file and the cause.
    """
    manifest = _read_manifest(location)
    for name, expected in manifest["files"].items():
        _check_file(location / name, expected)
    for digest, expected in manifest["frozen"].items():
        _check_file(frozen_path(location.parent, digest), expected)
    tree = read_checkpoint_tree(location)
    tensors = _Tensors(location, _load_tensors(location / TENSORS_FILE))
    try:
        state = unflatten_state(tree, tensors)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DamagedCheckpoint(
            f"checkpoint {location / STATE_FILE} does not match {TENSORS_FILE}: {type(exc).__name__}: {_short(exc)}"
        ) from None
    for name in tensors.non_finite():
        raise DamagedCheckpoint(
            f"checkpoint {location} holds NaN or infinite values in {name}: the run had diverged, or the file "
            "was altered; resume from an earlier checkpoint or start a new run"
        )
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise DamagedCheckpoint(f"checkpoint {location / STATE_FILE} lacks {', '.join(missing)}")
    return state


def load_latest_checkpoint(output_dir: Path, required: Iterable[str] = ()) -> tuple[Path, Any] | None:
    """The newest intact checkpoint in ``output_dir`` and its state; None when there is no checkpoint at all.

    A damaged newer checkpoint is skipped with a warning on stderr naming it;
    when every checkpoint is damaged, :class:`DamagedCheckpoint` lists them all.
    """
    required = tuple(required)
    damaged: list[str] = []
    for name in checkpoint_names(MAX_KEEP):
        location = output_dir / name
        if not location.is_dir():
            continue
        try:
            state = load_checkpoint(location, required)
        except DamagedCheckpoint as exc:
            damaged.append(str(exc))
            continue
        for problem in damaged:
            print(f"warning: {problem}\nwarning: resuming from the previous intact checkpoint, {location}",
                  file=sys.stderr)
        return location, state
    if not damaged:
        return None
    raise DamagedCheckpoint(
        f"no intact checkpoint in {output_dir}:\n" + "\n".join(f"  {problem}" for problem in damaged)
        + "\nstart a new run (without --resume, or in another output_dir)"
    )


@contextmanager
def lazy_tensors(location: Path) -> Iterator[Mapping[str, torch.Tensor]]:
    """The tensors of a checkpoint folder, frozen ones included, each read only when asked for.

    For reading a part of a large checkpoint (e.g. just a policy) with
    :func:`unflatten_state`; unlike :func:`load_checkpoint` it checks no hashes.
    """
    from safetensors import safe_open

    try:
        with ExitStack() as stack:
            handles: dict[str, Any] = {}

            def handle(digest: str) -> Any:
                if digest not in handles:
                    path = frozen_path(location.parent, digest) if digest else location / TENSORS_FILE
                    handles[digest] = stack.enter_context(safe_open(str(path), framework="pt"))
                return handles[digest]

            yield _LazyTensors(handle)
    except DamagedCheckpoint:
        raise
    except Exception as exc:
        if isinstance(exc, (PolyfuseError, KeyboardInterrupt)):
            raise
        raise DamagedCheckpoint(f"cannot read the tensors of checkpoint {location}: {type(exc).__name__}: "
                                f"{_short(exc)}") from None


class _LazyTensors(Mapping[str, torch.Tensor]):
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getitem__(self, name: str) -> torch.Tensor:
        if name.startswith(REFERENCE_PREFIX):
            digest, _, key = name[len(REFERENCE_PREFIX):].partition("/")
            return self._handle(digest).get_tensor(key)
        return self._handle("").get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._handle("").keys())

    def __len__(self) -> int:
        return len(self._handle("").keys())


def _read_manifest(location: Path) -> dict[str, Any]:
    path = location / MANIFEST_FILE
    if not path.is_file():
        raise DamagedCheckpoint(f"checkpoint {location} has no {MANIFEST_FILE} (cut short while saving, or written "
                                "by an older polyfuse)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files, frozen = manifest["files"], manifest["frozen"]
        if not all(isinstance(v, dict) for v in (files, frozen)) or set(files) != {TENSORS_FILE, STATE_FILE}:
            raise ValueError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise DamagedCheckpoint(f"cannot read {path}: {type(exc).__name__}: {_short(exc)}") from None
    return manifest


def _check_file(path: Path, expected: Any) -> None:
    try:
        actual = file_digest(path)
    except OSError as exc:
        raise DamagedCheckpoint(f"cannot read checkpoint file {path}: {exc.strerror or exc}") from None
    if not isinstance(expected, dict) or actual.as_dict() != expected:
        what = "is truncated or extended" if isinstance(expected, dict) and actual.bytes != expected.get("bytes") \
            else "has changed since it was saved (SHA-256 mismatch)"
        raise DamagedCheckpoint(f"checkpoint file {path} {what}")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: the file is unreadable
        raise DamagedCheckpoint(f"cannot read checkpoint file {path}: {type(exc).__name__}: {_short(exc)}") from None


class _Tensors(Mapping[str, torch.Tensor]):
    """The checkpoint's tensors plus the frozen ones it refers to; remembers what was read, to check it."""

    def __init__(self, location: Path, own: dict[str, torch.Tensor]) -> None:
        self.location, self.own = location, own
        self._frozen: dict[str, dict[str, torch.Tensor]] = {}
        self._read: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name.startswith(REFERENCE_PREFIX):
            digest, _, key = name[len(REFERENCE_PREFIX):].partition("/")
            if digest not in self._frozen:
                self._frozen[digest] = _load_tensors(frozen_path(self.location.parent, digest))
            tensor = self._frozen[digest][key]
        else:
            tensor = self.own[name]
        self._read[name] = tensor
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.own)

    def __len__(self) -> int:
        return len(self.own)

    def non_finite(self) -> Iterator[str]:
        for name, tensor in self._read.items():
            if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
                yield name


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
