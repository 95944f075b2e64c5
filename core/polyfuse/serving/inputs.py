"""Observations in JSON, checked against the pipeline's observation space before the model sees them.

Every client mistake is an :class:`InvalidInput` naming the field (``observations[3].image``) and what
was expected, which the server answers with a 4xx: a model never receives a batch it would fail on.
Images come as base64 PNG (or nested arrays), text as strings, audio (a 1-D space with a
``sample_rate``) as its samples or ``{"samples": [...], "sample_rate": N}`` at the space's rate, everything
else as numbers or nested arrays of the space's shape.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from polyfuse.observations import Batch, stack

PNG_PREFIX = "data:image/png;base64,"
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class InvalidInput(ValueError):
    """A request that does not fit the observation space: ``field`` says where, ``problem`` what was expected."""

    def __init__(self, field: str, problem: str, status: int = 422) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.status = field, problem, status


def parse_json(body: bytes) -> Any:
    """The request's JSON; NaN and infinities are refused (no observation space holds them), also as a
    number too large for a float (``1e400``), which Python would read as infinity."""

    def refuse(constant: str) -> None:
        raise InvalidInput("body", f"{constant} is not a number JSON allows; send finite numbers", 400)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise InvalidInput("body", f"{text[:40]} is too large for a float; send finite numbers", 400)
        return value

    try:
        return json.loads(body, parse_constant=refuse, parse_float=finite)
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", f"not valid JSON ({str(exc)[:120]}); send "
                                   '{"observation": {...}} or {"observations": [{...}, ...]}', 400) from None


MAX_EPISODE_ID = 200


@dataclass(frozen=True)
class ActRequest:
    """A request's observations, whether it sent one (``observation``) rather than a list, and the episode
    each observation belongs to (``None``: not said; a logging server records it as an episode of one step)."""

    observations: Batch
    single: bool
    episodes: list[str | None]


def decode_request(body: Any, space: spaces.Dict, keys: Sequence[str], max_observations: int) -> ActRequest:
    """The observations of an act request, checked, with their optional episode ids.

    ``keys`` are the observation keys the pipeline's modalities read: each sample needs all of them and
    nothing else.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("body", f'expected a JSON object {{"observation": {{...}}}} or {{"observations": '
                                   f"[...]}}, got {_kind(body)}")
    unknown = sorted(set(body) - {"observation", "observations", "episode", "episodes"})
    given = [key for key in ("observation", "observations") if key in body]
    if unknown or len(given) != 1:
        raise InvalidInput("body", f'expected exactly one of "observation" (one sample) or "observations" (a '
                                   'list of samples), optionally with "episode" (or "episodes": one per sample); '
                                   f"got keys {sorted(body)}")
    if "observation" in body:
        if "episodes" in body:
            raise InvalidInput("episodes", 'one observation belongs to one "episode"; "episodes" goes with '
                                           '"observations"')
        episode = episode_id(body["episode"], "episode") if "episode" in body else None
        return ActRequest(stack([decode_sample(body["observation"], space, keys, "observation")]), True, [episode])
    samples = body["observations"]
    if not isinstance(samples, list) or not samples:
        raise InvalidInput("observations", f"expected a non-empty list of observations, got {_kind(samples)}")
    if len(samples) > max_observations:
        raise InvalidInput("observations", f"at most {max_observations} observations per request, got "
                                           f"{len(samples)}; split the batch", 413)
    if "episode" in body:
        raise InvalidInput("episode", 'a list of observations takes "episodes" (one id or null per observation)')
    episodes: list[str | None] = [None] * len(samples)
    if "episodes" in body:
        given_ids = body["episodes"]
        if not isinstance(given_ids, list) or len(given_ids) != len(samples):
            raise InvalidInput("episodes", f"expected a list of {len(samples)} episode ids (or nulls), one per "
                                           f"observation, got {_kind(given_ids)}"
                                           + (f" of {len(given_ids)}" if isinstance(given_ids, list) else ""))
        episodes = [None if value is None else episode_id(value, f"episodes[{i}]") for i, value in enumerate(given_ids)]
    observations = stack([decode_sample(s, space, keys, f"observations[{i}]") for i, s in enumerate(samples)])
    return ActRequest(observations, False, episodes)


def episode_id(value: Any, field: str) -> str:
    """A client's episode id: a non-empty string (or an integer, taken as its digits) of at most 200 characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_EPISODE_ID:
        raise InvalidInput(field, f"expected an episode id: a string of 1 to {MAX_EPISODE_ID} characters or an "
                                  f"integer, got {_kind(value)}")
    return value


def decode_outcome(body: Any) -> tuple[str, float | None, bool]:
    """``/v1/outcome``'s ``{"episode": ID, "reward": R, "done": B}``: the reward observed after the episode's
    last action (optional) and whether the episode ended (default false)."""
    if not isinstance(body, Mapping) or "episode" not in body or set(body) - {"episode", "reward", "done"}:
        raise InvalidInput("body", 'expected {"episode": ID, "reward": NUMBER (optional), "done": true|false '
                                   f"(optional)}}, got {_kind(body) if not isinstance(body, Mapping) else sorted(body)}")
    reward = body.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))):
        raise InvalidInput("reward", f"expected a number, got {_kind(reward)}")
    if reward is not None and not abs(reward) <= sys.float_info.max:  # NaN, infinite, or an integer past floats
        raise InvalidInput("reward", f"expected a finite number, got {str(reward)[:40]}")
    done = body.get("done", False)
    if not isinstance(done, bool):
        raise InvalidInput("done", f"expected true or false, got {_kind(done)}")
    return episode_id(body["episode"], "episode"), None if reward is None else float(reward), done


def decode_sample(sample: Any, space: spaces.Dict, keys: Sequence[str], field: str) -> dict[str, Any]:
    if not isinstance(sample, Mapping):
        raise InvalidInput(field, f"expected an object with the keys {list(keys)}, got {_kind(sample)}")
    missing = [key for key in keys if key not in sample]
    if missing:
        raise InvalidInput(f"{field}.{missing[0]}", f"missing; the pipeline reads the modalities {list(keys)} "
                                                    f"({_describe(space[missing[0]])} here)")
    extra = sorted(str(key) for key in sample if key not in keys)
    if extra:
        raise InvalidInput(f"{field}.{extra[0]}", f"not an observation this pipeline reads; it reads {list(keys)}")
    return {key: decode_value(sample[key], space[key], f"{field}.{key}") for key in keys}


def decode_value(value: Any, space: spaces.Space, field: str) -> Any:
    """One modality's value as the environment would give it (``str`` for text, else a numpy array)."""
    if isinstance(space, spaces.Text):
        return _text(value, space, field)
    if isinstance(space, spaces.Discrete):
        number = _integer(value, field, f"an integer in [{int(space.start)}, {int(space.start + space.n - 1)}]")
        if not space.start <= number < space.start + space.n:
            raise InvalidInput(field, f"expected an integer in [{int(space.start)}, {int(space.start + space.n - 1)}]"
                                      f", got {number}")
        return np.asarray(number, dtype=space.dtype)
    if isinstance(space, spaces.Box):
        if isinstance(value, str):
            return _png(value, space, field)
        if _sample_rate(space) is not None and isinstance(value, Mapping):
            return _box(_waveform(value, space, field), space, f"{field}.samples")
        return _box(value, space, field)
    if isinstance(space, (spaces.MultiBinary, spaces.MultiDiscrete)):
        array = _numbers(value, space.shape, field)
        cast = _cast(array, space.dtype)
        # compared before the cast too: 256 in an int8 space would wrap round to a valid 0
        if not np.array_equal(array, np.round(array)) or not np.array_equal(cast, array) or not space.contains(cast):
            raise InvalidInput(field, f"expected {_describe(space)}")
        return cast
    raise InvalidInput(field, f"observations of {type(space).__name__} spaces cannot be sent over HTTP", 400)


def _text(value: Any, space: spaces.Text, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected text ({_describe(space)}), got {_kind(value)}")
    if not space.min_length <= len(value) <= space.max_length:
        raise InvalidInput(field, f"expected text of {space.min_length} to {space.max_length} characters, got "
                                  f"{len(value)}")
    outside = sorted({c for c in value if c not in space.character_set})
    if outside:
        raise InvalidInput(field, f"characters {''.join(outside)[:20]!r} are outside the space's character set "
                                  f"{''.join(sorted(space.character_set))!r}")
    return value


def _integer(value: Any, field: str, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"expected {expected}, got {_kind(value)}")
    return value


def _numbers(value: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
    """A nested list of numbers of exactly ``shape``, as a float64 or int64 array."""
    if not isinstance(value, (list, int, float)) or isinstance(value, bool):
        raise InvalidInput(field, f"expected a nested array of numbers of shape {list(shape)}, got {_kind(value)}")
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidInput(field, f"expected a rectangular nested array of shape {list(shape)}; its rows "
                                  "differ in length") from None
    if array.dtype.kind not in "iuf" or array.dtype == np.uint64:
        raise InvalidInput(field, f"expected numbers only (shape {list(shape)}), got {array.dtype.kind!r} values")
    if array.shape != tuple(shape):
        raise InvalidInput(field, f"expected shape {list(shape)}, got {list(array.shape)}")
    return array


def _box(value: Any, space: spaces.Box, field: str) -> np.ndarray:
    array = _numbers(value, space.shape, field)
    integral = np.issubdtype(space.dtype, np.integer)
    if integral and not np.array_equal(array, np.round(array)):
        raise InvalidInput(field, f"expected integers ({space.dtype}), got fractional values")
    low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
    outside = (array < low) | (array > high)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise InvalidInput(field, f"value {array[where].item()} at index {list(where)} is outside the space's range "
                                  f"[{low[where].item()}, {high[where].item()}]")
    cast = _cast(array, space.dtype)
    if not np.isfinite(cast).all():  # an unbounded float space: a value past its dtype's range became infinite
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        raise InvalidInput(field, f"value {array[where].item()} at index {list(where)} is too large for the space's "
                                  f"{space.dtype}")
    return cast


def _cast(array: np.ndarray, dtype: Any) -> np.ndarray:
    """``array`` as ``dtype``, quietly: the callers check what the cast changed."""
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(dtype)


def _sample_rate(space: spaces.Space) -> int | None:
    """An audio space's rate: any 1-D space with an integer ``sample_rate`` (as ``polyfuse-audio``'s ``Audio``)."""
    rate = getattr(space, "sample_rate", None)
    return rate if isinstance(rate, int) and len(space.shape or ()) == 1 else None


def _waveform(value: Mapping[str, Any], space: spaces.Box, field: str) -> Any:
    """The samples of ``{"samples": [...], "sample_rate": N}``, once N is the space's rate (no resampling here)."""
    rate = _sample_rate(space)
    if set(value) != {"samples", "sample_rate"}:
        raise InvalidInput(field, f'expected {{"samples": [...], "sample_rate": {rate}}} or the samples alone, got '
                                  f"keys {sorted(map(str, value))}")
    given = value["sample_rate"]
    if given != rate or isinstance(given, bool):
        raise InvalidInput(f"{field}.sample_rate", f"expected {rate} Hz, the rate the policy was trained at, got "
                                                   f"{given!r}; resample the waveform before sending it")
    return value["samples"]


def _png(value: str, space: spaces.Box, field: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    shape = tuple(space.shape)
    channels = 1 if len(shape) == 2 else shape[-1] if len(shape) == 3 else None
    if space.dtype != np.uint8 or channels not in IMAGE_MODES:
        raise InvalidInput(field, f"a base64 PNG fits uint8 image spaces (H, W[, 1|3|4]); this one is "
                                  f"{_describe(space)}: send a nested array")
    text = value.removeprefix(PNG_PREFIX)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(field, "not valid base64; expected a base64-encoded PNG (or a nested array)") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise InvalidInput(field, f"expected a PNG image, got {image.format or 'an unknown format'}")
            if image.size != (shape[1], shape[0]):  # checked before decoding: no oversized image is expanded
                raise InvalidInput(field, f"expected a {shape[1]}x{shape[0]} (width x height) image, got "
                                          f"{image.size[0]}x{image.size[1]}")
            array = np.asarray(image.convert(IMAGE_MODES[channels]))
    except InvalidInput:
        raise
    except Image.DecompressionBombError:  # a header declaring a huge image: refused by PIL before its size check
        raise InvalidInput(field, f"expected a {shape[1]}x{shape[0]} (width x height) image, got one too large "
                                  "to open") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(field, f"not a readable PNG image ({type(exc).__name__})") from None
    array = array.reshape(shape)
    low, high = np.broadcast_to(space.low, shape), np.broadcast_to(space.high, shape)
    if ((array < low) | (array > high)).any():
        raise InvalidInput(field, f"pixel values outside the space's range [{low.min()}, {high.max()}]")
    return array


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Text):
        return f"text of {space.min_length} to {space.max_length} characters"
    if isinstance(space, spaces.Box) and _sample_rate(space) is not None:
        return (f"a waveform of {space.shape[0]} {space.dtype} samples at {_sample_rate(space)} Hz in "
                f"[{_number(np.min(space.low))}, {_number(np.max(space.high))}], alone or as "
                f'{{"samples": [...], "sample_rate": {_sample_rate(space)}}}')
    if isinstance(space, spaces.Box):
        low, high = np.min(space.low), np.max(space.high)
        image = " (or a base64 PNG)" if space.dtype == np.uint8 and len(space.shape) in (2, 3) else ""
        return f"a {space.dtype} array of shape {list(space.shape)} in [{_number(low)}, {_number(high)}]{image}"
    if isinstance(space, spaces.Discrete):
        return f"an integer in [{int(space.start)}, {int(space.start + space.n - 1)}]"
    return str(space)


def _number(value: Any) -> str:
    value = float(value)
    return str(value) if math.isinf(value) else f"{value:g}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
