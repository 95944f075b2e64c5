"""Preference pairs over actions: in observation ``s``, action ``chosen`` is preferred to ``rejected``.

Two ways to store them, both read by :func:`read_preferences`:

- a folder polyfuse writes (:func:`write_preferences`): ``preferences.json``
  (format, spaces, count), ``observations.safetensors`` (numeric observation
  keys, one row per distinct observation), ``text.json`` (text keys) and
  ``pairs.jsonl``, one pair a line, referring to observations by row:
  ``{"observation": 12, "chosen": 3, "rejected": 7}``;
- a JSONL file written by anything, each line holding its observation inline:
  ``{"observation": {"image": [[0, 3, ...], ...], "question": "is it even?"}, "chosen": 1, "rejected": 0}``.
  Its spaces are the environment's when the pipeline has one; without one,
  numbers are read as float32 ``Box`` es and strings as ``Text``.

Extra fields on a pair line (who judged, a confidence) are kept in ``extras``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from polyfuse.datasets.base import Dataset
from polyfuse.datasets.spaces import space_from_json, space_to_json
from polyfuse.errors import PolyfuseError
from polyfuse.observations import ObservationColumns, as_text_array, batch_length, is_text

FORMAT = "polyfuse-preferences"
VERSION = 1
META_FILE = "preferences.json"
TENSORS_FILE = "observations.safetensors"
TEXT_FILE = "text.json"
PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class PreferenceBatch:
    """Rows of a preference dataset: observations (a batch) and the two actions compared in each."""

    observations: Mapping[str, Any]
    chosen: np.ndarray
    rejected: np.ndarray


@dataclass
class PreferencePairs(Dataset):
    """Preference pairs over the actions of a discrete action space."""

    observations: ObservationColumns
    observation_rows: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    observation_space: Any
    action_space: Any
    extras: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, rows: np.ndarray) -> PreferenceBatch:
        return PreferenceBatch(self.observations.take(self.observation_rows[rows]), self.chosen[rows],
                               self.rejected[rows])


def write_preferences(
    folder: str | Path,
    observations: Mapping[str, Any],
    chosen: np.ndarray,
    rejected: np.ndarray,
    observation_space: spaces.Dict,
    action_space: spaces.Space,
    extras: list[dict[str, Any]] | None = None,
) -> Path:
    """Write one pair per observation row (``observations`` is a batch of ``len(chosen)``) as a folder."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = batch_length(observations)
    if not len(chosen) == len(rejected) == count:
        raise ValueError(f"{count} observations, {len(chosen)} chosen and {len(rejected)} rejected actions")
    numeric = {key: np.ascontiguousarray(value) for key, value in observations.items() if not is_text(value)}
    text = {key: [str(v) for v in value] for key, value in observations.items() if is_text(value)}
    save_file(numeric, str(folder / TENSORS_FILE))
    _readable_like_the_rest(folder / TENSORS_FILE)
    (folder / TEXT_FILE).write_text(json.dumps(text), encoding="utf-8")
    with (folder / PAIRS_FILE).open("w", encoding="utf-8") as pairs:
        for row in range(count):
            line = {"observation": row, "chosen": int(chosen[row]), "rejected": int(rejected[row])}
            pairs.write(json.dumps({**line, **((extras or [])[row] if extras else {})}) + "\n")
    meta = {"format": FORMAT, "version": VERSION, "pairs": count,
            "observation_space": space_to_json(observation_space), "action_space": space_to_json(action_space)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def _readable_like_the_rest(path: Path) -> None:
    """safetensors writes 0600; give the file the umask's usual mode, as the JSON files beside it have."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def read_preferences(
    path: str | Path, observation_space: spaces.Dict | None = None, action_space: spaces.Space | None = None
) -> PreferencePairs:
    """Read a folder :func:`write_preferences` wrote, or a JSONL file with inline observations.

    The environment's spaces, when given, are checked against a folder's and
    used to read a JSONL file's observations.
    """
    path = Path(path)
    if path.is_dir():
        dataset = _read_folder(path)
        if observation_space is not None and space_to_json(observation_space) != space_to_json(dataset.observation_space):
            raise PolyfuseError(
                f"{path}: the dataset's observations ({dataset.observation_space}) do not match the environment's "
                f"({observation_space}); collect the pairs from this environment, or change env.id"
            )
        return dataset
    if path.is_file():
        return _read_jsonl(path, observation_space, action_space)
    raise PolyfuseError(f"dataset.params.path: dataset not found: {path} (a preferences folder or a .jsonl file)")


def _read_folder(folder: Path) -> PreferencePairs:
    from safetensors.numpy import load_file

    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolyfuseError(f"{folder}: not a preferences folder ({META_FILE}: {exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PolyfuseError(
            f"{folder / META_FILE}: format {meta.get('format')!r} version {meta.get('version')!r}; this polyfuse "
            f"reads {FORMAT!r} version {VERSION}"
        )
    observation_space = space_from_json(meta["observation_space"])
    action_space = space_from_json(meta["action_space"])
    batch: dict[str, Any] = dict(load_file(str(folder / TENSORS_FILE)))
    batch.update(json.loads((folder / TEXT_FILE).read_text(encoding="utf-8")))
    columns = ObservationColumns(batch)
    rows, chosen, rejected, extras = [], [], [], []
    for number, line in _jsonl_lines(folder / PAIRS_FILE):
        where = f"{folder / PAIRS_FILE} line {number}"
        row = line.get("observation")
        if not isinstance(row, int) or not 0 <= row < len(columns):
            raise PolyfuseError(f"{where}: 'observation' must be a row number below {len(columns)}, got {row!r}")
        rows.append(row)
        chosen.append(_action(line, "chosen", action_space, where))
        rejected.append(_action(line, "rejected", action_space, where))
        extras.append(_extra_fields(line))
    return _pairs(columns, np.asarray(rows, dtype=np.int64), chosen, rejected, observation_space, action_space, extras,
                  str(folder))


def _read_jsonl(path: Path, observation_space: spaces.Dict | None, action_space: spaces.Space | None) -> PreferencePairs:
    observations: list[Mapping[str, Any]] = []
    chosen, rejected, extras = [], [], []
    for number, line in _jsonl_lines(path):
        where = f"{path} line {number}"
        observation = line.get("observation")
        if not isinstance(observation, dict) or not observation:
            raise PolyfuseError(f"{where}: 'observation' must be an object with one entry per observation key")
        observations.append(observation)
        chosen.append(line.get("chosen"))
        rejected.append(line.get("rejected"))
        extras.append(_extra_fields(line))
        if len(observations) > 1 and set(observation) != set(observations[0]):
            raise PolyfuseError(f"{where}: observation keys {sorted(observation)} differ from line 1's "
                                f"{sorted(observations[0])}")
    if not observations:
        raise PolyfuseError(f"{path}: no preference pairs in the file")
    if observation_space is not None and set(observations[0]) != set(observation_space.spaces):
        missing = sorted(set(observation_space.spaces) - set(observations[0]))
        if missing:
            raise PolyfuseError(f"{path}: the observations lack the environment's keys {missing}; every line needs "
                                f"all of {sorted(observation_space.spaces)}")
    batch = {key: _column(key, [o[key] for o in observations], observation_space, path) for key in observations[0]}
    observation_space = observation_space or spaces.Dict({key: _inferred_space(value) for key, value in batch.items()})
    if action_space is None:
        actions = [a for a in chosen + rejected if isinstance(a, int) and not isinstance(a, bool) and a >= 0]
        if not actions:
            raise PolyfuseError(f"{path}: no pair names its actions as whole numbers ('chosen', 'rejected')")
        action_space = spaces.Discrete(max(actions) + 1)
    checked_chosen = [_action({"chosen": a}, "chosen", action_space, f"{path} line {i + 1}") for i, a in enumerate(chosen)]
    checked_rejected = [_action({"rejected": a}, "rejected", action_space, f"{path} line {i + 1}")
                        for i, a in enumerate(rejected)]
    return _pairs(ObservationColumns(batch), np.arange(len(observations)), checked_chosen, checked_rejected,
                  observation_space, action_space, extras, str(path))


def _pairs(columns: ObservationColumns, rows: np.ndarray, chosen: list[int], rejected: list[int],
           observation_space: Any, action_space: Any, extras: list[dict[str, Any]], where: str) -> PreferencePairs:
    chosen_array, rejected_array = np.asarray(chosen, dtype=np.int64), np.asarray(rejected, dtype=np.int64)
    same = np.flatnonzero(chosen_array == rejected_array)
    if same.size:
        raise PolyfuseError(f"{where}: pair {int(same[0]) + 1} prefers an action to itself; drop such pairs")
    if not isinstance(action_space, spaces.Discrete):
        raise PolyfuseError(f"{where}: preference pairs need a Discrete action space, not {action_space}")
    return PreferencePairs(columns, rows, chosen_array, rejected_array, observation_space, action_space, extras)


def _jsonl_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolyfuseError(f"cannot read {path}: {exc}") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise PolyfuseError(f"{path} line {number}: not JSON ({exc})") from None
        if not isinstance(line, dict):
            raise PolyfuseError(f"{path} line {number}: expected an object with observation, chosen and rejected")
        lines.append((number, line))
    return lines


def _action(line: Mapping[str, Any], name: str, space: spaces.Space, where: str) -> int:
    value = line.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or (isinstance(space, spaces.Discrete)
                                                                  and not space.contains(value)):
        raise PolyfuseError(f"{where}: {name!r} must be an action of {space}, got {value!r}")
    return value


def _extra_fields(line: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in line.items() if key not in {"observation", "chosen", "rejected"}}


def _column(key: str, values: list[Any], observation_space: spaces.Dict | None, path: Path) -> Any:
    space = observation_space.spaces.get(key) if observation_space is not None else None
    if observation_space is not None and space is None:
        raise PolyfuseError(f"{path}: observation key {key!r} is not one of the environment's "
                            f"({sorted(observation_space.spaces)})")
    if all(isinstance(v, str) for v in values):
        return as_text_array(values)
    try:
        dtype = space.dtype if isinstance(space, spaces.Box) else _natural_dtype(values)
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PolyfuseError(f"{path}: observation key {key!r} is not an array of numbers of the environment's type "
                            f"on every line ({exc})") from None
    if isinstance(space, spaces.Box) and array.shape[1:] == space.shape and not all(space.contains(a) for a in array):
        raise PolyfuseError(f"{path}: observation key {key!r} holds values outside the environment's space {space}")
    if isinstance(space, spaces.Box) and array.shape[1:] != space.shape:
        raise PolyfuseError(f"{path}: observation key {key!r} has shape {array.shape[1:]}; the environment's is "
                            f"{space.shape}")
    return array


def _natural_dtype(values: list[Any]) -> Any:
    """uint8 when every value is a whole number in 0..255 (pixels), else float32."""
    flat = np.asarray(values, dtype=np.float64)
    whole = flat.size and np.all(flat == np.round(flat)) and flat.min() >= 0 and flat.max() <= 255
    return np.uint8 if whole else np.float32


def _inferred_space(column: np.ndarray) -> spaces.Space:
    """Text, whole numbers in 0..255 as uint8 (pixels), other numbers as float32 without bounds."""
    if column.dtype == object:
        return spaces.Text(max(len(v) for v in column), min_length=0, charset=sorted({c for v in column for c in v}))
    return spaces.Box(0, 255, column.shape[1:], np.uint8) if column.dtype == np.uint8 \
        else spaces.Box(-np.inf, np.inf, column.shape[1:], np.float32)
