"""gymnasium spaces as JSON, so a dataset on disk says what its observations and actions are.

A pipeline without an environment builds its encoders from these spaces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box, Discrete, MultiDiscrete, MultiBinary, Text or Dict space."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": space.dtype.str,
                "low": _bound(space.low), "high": _bound(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Text):
        return {"type": "Text", "max_length": space.max_length, "min_length": space.min_length,
                "charset": "".join(sorted(space.character_set))}
    raise ValueError(f"cannot describe a {type(space).__name__} space as JSON")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """The space :func:`space_to_json` described (``ValueError`` naming what is wrong otherwise)."""
    kind = data.get("type")
    try:
        if kind == "Dict":
            return spaces.Dict({key: space_from_json(sub) for key, sub in data["spaces"].items()})
        if kind == "Box":
            dtype, shape = np.dtype(data["dtype"]), tuple(data["shape"])
            low, high = (np.broadcast_to(np.asarray(data[end], dtype=np.float64), shape) for end in ("low", "high"))
            return spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype)
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
        if kind == "MultiBinary":
            return spaces.MultiBinary(data["n"])
        if kind == "Text":
            return spaces.Text(int(data["max_length"]), min_length=int(data.get("min_length", 1)),
                               charset=data.get("charset") or spaces.text.alphanumeric)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"incomplete {kind} space description ({exc}): {data}") from None
    raise ValueError(f"unknown space type {kind!r} (expected Box, Discrete, MultiDiscrete, MultiBinary, Text, Dict)")


def _bound(values: np.ndarray) -> Any:
    """One number when every element shares it, else the whole nested list."""
    flat = np.unique(values)
    value = flat[0].item() if flat.size == 1 else values.tolist()
    return _finite_or_name(value)


def _finite_or_name(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite_or_name(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return value
