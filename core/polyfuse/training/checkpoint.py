"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A nested state (dicts, lists, tuples, tensors, numpy arrays, JSON values) is
split into ``checkpoint.safetensors`` (every tensor and numeric array, under
its path in the state) and ``checkpoint.json`` (the structure, with
references to those tensors, and every other value). Loading cannot run
code, so checkpoints from anyone are safe to open.

Both files live in ``<output_dir>/checkpoint/``, written into a temporary
folder and swapped in with ``os.replace``: a run killed while saving leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from polyfuse.errors import PolyfuseError

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"
_MARKERS = ("__tensor__", "__ndarray__", "__textarray__", "__tuple__", "__dict__")


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON-able tree and the tensors it references by name."""
    tensors: dict[str, torch.Tensor] = {}

    def tensor_ref(tensor: torch.Tensor, path: list[str]) -> str:
        name = "/".join(path) or "root"
        unique, n = name, 1
        while unique in tensors:
            unique, n = f"{name}#{n}", n + 1
        tensors[unique] = tensor
        return unique

    def encode(value: Any, path: list[str]) -> Any:
        if isinstance(value, torch.Tensor):
            return {"__tensor__": tensor_ref(value.detach().cpu().clone(), path)}
        if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "OUS":
            if isinstance(value, np.generic):
                return encode(value.item(), path)
            return {"__textarray__": encode(value.tolist(), path), "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return {"__ndarray__": tensor_ref(torch.from_numpy(np.array(value)), path), "scalar": True}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": tensor_ref(torch.from_numpy(np.array(value, order="C")), path)}
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


def save_checkpoint(output_dir: Path, state: Any) -> Path:
    """Write ``state`` to ``output_dir/checkpoint/`` atomically; returns that folder."""
    tree, tensors = flatten_state(state)
    final = output_dir / CHECKPOINT_DIR
    staging = output_dir / f"{CHECKPOINT_DIR}.tmp"
    previous = output_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    metadata = {"format": "polyfuse", "version": str(FORMAT_VERSION)}
    save_file(tensors, str(staging / TENSORS_FILE), metadata=metadata)
    text = json.dumps({"polyfuse_checkpoint": FORMAT_VERSION, "state": tree})
    (staging / STATE_FILE).write_text(text, encoding="utf-8")
    for name in (TENSORS_FILE, STATE_FILE):
        _fsync(staging / name)
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(staging, final)
    shutil.rmtree(previous, ignore_errors=True)
    _fsync(output_dir)
    return final


def checkpoint_location(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (the previous one if a save was cut short), or None."""
    for candidate in (output_dir / CHECKPOINT_DIR, output_dir / f"{CHECKPOINT_DIR}.old"):
        if (candidate / STATE_FILE).is_file() and (candidate / TENSORS_FILE).is_file():
            return candidate
    return None


def read_checkpoint_tree(location: Path) -> Any:
    """The JSON part of a checkpoint (cheap: no tensors), still with tensor references."""
    try:
        data = json.loads((location / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PolyfuseError(f"cannot read checkpoint {location / STATE_FILE}: {exc}") from None
    if data.get("polyfuse_checkpoint") != FORMAT_VERSION:
        raise PolyfuseError(
            f"{location / STATE_FILE} is not a polyfuse checkpoint of format {FORMAT_VERSION}; "
            "start a new run in another output_dir"
        )
    return data["state"]


def load_checkpoint(location: Path) -> Any:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    return unflatten_state(read_checkpoint_tree(location), load_file(str(location / TENSORS_FILE)))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
