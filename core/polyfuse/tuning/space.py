"""The search space: config paths mapped to distributions, checked against the pipeline before any trial.

A space file maps dotted config paths to one distribution each::

    optimizer.params.learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}
    optimizer.params.exploration_fraction: {uniform: [0.05, 0.5]}
    optimizer.params.batch_size: {int: [32, 256], step: 32}      # or log: true
    fuser.name: {choice: [concat, gated, tensor]}

A path must name a setting the config has, its defaults filled (``trainer.eval_every`` is there
even when the file leaves it out). Params under a component whose ``name`` is itself tuned are
conditional: they are sampled only when the chosen component has that setting, and a component
other than the config's own starts from its own defaults, as ``polyfuse compare`` does. Each
distribution's ends and each choice are validated as a whole pipeline before the study starts, so
a range that can only fail is found at once, with the path to fix.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyfuse.config import read_yaml, validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.preflight import check_pipeline
from polyfuse.registry import Registry
from polyfuse.yaml_safety import echo

FORMS = ("{log_uniform: [LOW, HIGH]}, {uniform: [LOW, HIGH]} (optional step), {int: [LOW, HIGH]} (optional step "
         "or log: true), {choice: [A, B, ...]}")
Scalar = (str, int, float, bool, type(None))


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LogUniform(_Distribution):
    """Floats spread evenly in log space: learning rates, regularisation weights."""

    log_uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        low, high = self.log_uniform
        if not (0 < low < high and math.isfinite(high)):
            raise ValueError(f"needs 0 < LOW < HIGH, both finite, got [{low}, {high}]")
        return self

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.log_uniform, log=True)

    def probes(self) -> list[Any]:
        return list(self.log_uniform)

    def contains(self, value: Any) -> bool:
        return _number(value) and self.log_uniform[0] <= value <= self.log_uniform[1]


class Uniform(_Distribution):
    """Floats spread evenly between two ends, optionally on a grid of ``step``."""

    uniform: tuple[float, float]
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        low, high = self.uniform
        if not (low < high and math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"needs LOW < HIGH, both finite, got [{low}, {high}]")
        return self

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, *self.uniform, step=self.step)

    def probes(self) -> list[Any]:
        return list(self.uniform)

    def contains(self, value: Any) -> bool:
        return _number(value) and self.uniform[0] <= value <= self.uniform[1]


class IntRange(_Distribution):
    """Whole numbers from LOW to HIGH inclusive: every ``step``-th, or spread in log space with ``log: true``."""

    int_range: tuple[int, int] = Field(alias="int")
    step: int = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        low, high = self.int_range
        if low >= high:
            raise ValueError(f"needs LOW < HIGH, got [{low}, {high}]")
        if self.log and (low <= 0 or self.step != 1):
            raise ValueError("log: true needs LOW > 0 and no step (Optuna samples log-spaced integers one by one)")
        return self

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, *self.int_range, step=self.step, log=self.log)

    def probes(self) -> list[Any]:
        low, high = self.int_range
        return [low, high - (high - low) % self.step]

    def contains(self, value: Any) -> bool:
        low, high = self.int_range
        return (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
                and (value - low) % self.step == 0)


class Choice(_Distribution):
    """One of a list of values; lists and mappings are choices too (``hidden_sizes: {choice: [[64], [128, 128]]}``)."""

    choice: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Choice:
        keys = [self.encode(value) for value in self.choice]
        if len(set(keys)) != len(keys):
            raise ValueError("lists a value twice")
        return self

    @staticmethod
    def encode(value: Any) -> Any:
        """Optuna keeps scalars only: a list or mapping choice is stored as its JSON text."""
        return value if isinstance(value, Scalar) else json.dumps(value, sort_keys=True)

    def decode(self, stored: Any) -> Any:
        for value in self.choice:
            if self.encode(value) == stored:
                return copy.deepcopy(value)
        raise PolyfuseError(f"{echo(stored)} is not one of this space's choices {echo(self.choice)}")

    def suggest(self, trial: Any, name: str) -> Any:
        return self.decode(trial.suggest_categorical(name, [self.encode(value) for value in self.choice]))

    def probes(self) -> list[Any]:
        return copy.deepcopy(self.choice)

    def contains(self, value: Any) -> bool:
        return self.encode(value) in [self.encode(choice) for choice in self.choice]


Distribution = LogUniform | Uniform | IntRange | Choice
KINDS: dict[str, type[_Distribution]] = {"log_uniform": LogUniform, "uniform": Uniform, "int": IntRange,
                                         "choice": Choice}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Entry:
    """One tuned path; ``under`` is the component path whose tuned ``name`` decides whether it applies."""

    path: str
    distribution: Distribution
    under: str | None = None
    applies_to: set[str] = field(default_factory=set)  # the names of ``under`` that have this setting

    def decode(self, stored: Any) -> Any:
        return self.distribution.decode(stored) if isinstance(self.distribution, Choice) else stored

    def encode(self, value: Any) -> Any:
        return Choice.encode(value) if isinstance(self.distribution, Choice) else value


@dataclass
class Space:
    """A checked search space over one base config: what each trial samples, and the config it then runs."""

    base: dict[str, Any]
    base_dump: dict[str, Any]  # the base config validated: every setting there, defaults filled
    entries: list[Entry]
    source: str

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every path that applies (component names first: they decide which params exist)."""
        values: dict[str, Any] = {}
        for entry in self.entries:
            if entry.under is not None and values[f"{entry.under}.name"] not in entry.applies_to:
                continue
            values[entry.path] = entry.distribution.suggest(trial, entry.path)
        return values

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's stored params back to config values."""
        entries = {entry.path: entry for entry in self.entries}
        return {path: entries[path].decode(value) for path, value in params.items() if path in entries}

    def config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The base config with ``values`` set; a component swapped for another starts from its own defaults."""
        data = copy.deepcopy(self.base)
        for path, value in sorted(values.items(), key=lambda item: not item[0].endswith(".name")):
            parts = path.split(".")
            if parts[-1] == "name" and _component_name(data, parts[:-1]) not in (None, value):
                _set(data, [*parts[:-1], "params"], {})
            _set(data, parts, value)
        return data

    def own_values(self) -> tuple[dict[str, Any], list[str]]:
        """The base config's own value of each path (for trial 0), and the paths whose value is outside the space."""
        dump, values, outside = self.base_dump, {}, []
        for entry in self.entries:
            if entry.under is not None and _get(dump, f"{entry.under}.name".split(".")) not in entry.applies_to:
                continue
            value = _get(dump, entry.path.split("."))
            if entry.distribution.contains(value):
                values[entry.path] = entry.encode(value)
            else:
                outside.append(f"{entry.path} = {echo(value)}")
        return values, outside


def load_space(path: Path, base: dict[str, Any], registry: Registry, probe_dir: Path) -> Space:
    """Read, validate and probe a space file against the base config (see the module's docstring)."""
    raw = read_yaml(path)
    source = str(path)
    if not isinstance(raw, dict) or not raw:
        raise PolyfuseError(f"{source}: a search space maps config paths to distributions, e.g. "
                            "optimizer.params.learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}")
    base_dump = validate_pipeline(copy.deepcopy(base), registry, source="the config").model_dump(mode="json")
    entries = [Entry(str(key), _distribution(source, str(key), value)) for key, value in raw.items()]
    entries.sort(key=lambda entry: not entry.path.endswith(".name"))  # names first: they decide the params
    space = Space(base, base_dump, entries, source)
    tuned_names = {entry.path.removesuffix(".name"): entry for entry in entries if entry.path.endswith(".name")}
    problems: list[tuple[str, str]] = []
    for entry in entries:
        problems += _locate(entry, base_dump, tuned_names, space, registry)
    if problems:
        raise ConfigError(source, problems)
    for entry in entries:
        problems += _probe(entry, space, registry, probe_dir)
    if problems:
        raise ConfigError(source, problems)
    return space


def _distribution(source: str, path: str, value: Any) -> Distribution:
    kinds = [key for key in KINDS if isinstance(value, dict) and key in value]
    if len(kinds) != 1:
        raise ConfigError(source, [(path, f"expected one distribution: {FORMS}; got {echo(value)}")])
    try:
        return KINDS[kinds[0]].model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        messages = "; ".join(f"{'.'.join(map(str, e['loc'])) or kinds[0]}: {e['msg']}" for e in exc.errors())
        raise ConfigError(source, [(path, f"{messages} (forms: {FORMS})")]) from None


def _locate(entry: Entry, base_dump: dict[str, Any], tuned_names: dict[str, Entry], space: Space,
            registry: Registry) -> list[tuple[str, str]]:
    """Where the path is: a setting of the config, or of some choices of a tuned component name."""
    parts = entry.path.split(".")
    owner = next((name for name in tuned_names if entry.path.startswith(f"{name}.params.")), None)
    if owner is None:
        if _get(base_dump, parts) is _MISSING:
            return [(entry.path, _missing_message(base_dump, parts))]
        return []
    names = tuned_names[owner].distribution
    assert isinstance(names, Choice)
    entry.under = owner
    for name in names.choice:
        try:
            dump = validate_pipeline(space.config({f"{owner}.name": name}), registry).model_dump(mode="json")
        except ConfigError:
            continue  # the name's own probe reports it
        if _get(dump, parts) is not _MISSING:
            entry.applies_to.add(name)
    if not entry.applies_to:
        return [(entry.path, (f"none of {owner}.name's choices {echo(names.choice)} has this setting; "
                              "check the spelling against `polyfuse validate -v CONFIG`"))]
    return []


def _probe(entry: Entry, space: Space, registry: Registry, probe_dir: Path) -> list[tuple[str, str]]:
    """Each end of a range and each choice, validated as a whole pipeline as `polyfuse validate` does."""
    context = {f"{entry.under}.name": min(entry.applies_to, key=str)} if entry.under else {}
    problems = []
    for value in entry.distribution.probes():
        data = space.config({**context, entry.path: value})
        data.setdefault("trainer", {})["output_dir"] = str(probe_dir)
        try:
            check_pipeline(validate_pipeline(data, registry), registry)
        except ConfigError as exc:
            found = "; ".join(f"{path}: {message}" if path else message for path, message in exc.problems)
            fix = "drop this choice" if isinstance(entry.distribution, Choice) else "narrow the range"
            problems.append((entry.path, f"{echo(value)} fails validation ({found}); {fix}"))
    return problems


_MISSING = object()


def _get(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _missing_message(dump: dict[str, Any], parts: list[str]) -> str:
    import difflib

    for depth in range(len(parts)):
        node = _get(dump, parts[:depth])
        if isinstance(node, dict) and parts[depth] in node:
            continue
        where = ".".join(parts[:depth]) or "the top level"
        if node is None:
            return f"{where} is not set in the config; set it there first (tune changes settings the config has)"
        if isinstance(node, dict):
            near = difflib.get_close_matches(parts[depth], list(node), n=1)
            hint = f"; did you mean {'.'.join([*parts[:depth], near[0]])}?" if near else ""
            return f"no setting {parts[depth]!r} under {where} (it has: {', '.join(map(str, node))}){hint}"
        return f"{where} is {echo(node)}, which has no setting {parts[depth]!r}"
    return "not a setting of the config"  # pragma: no cover - every path that fails _get fails at some depth


def _component_name(data: dict[str, Any], parts: list[str]) -> Any:
    node = _get(data, parts)
    return node if isinstance(node, str) else node.get("name") if isinstance(node, dict) else None


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set a dotted path, spelling out ``fuser: gated`` as ``{name: gated}`` where params go under it."""
    node: Any = data
    for index, part in enumerate(parts[:-1]):
        child = node[int(part)] if isinstance(node, list) else node.get(part)
        if isinstance(child, str) and parts[index + 1] in ("name", "params"):
            child = {"name": child}
        elif not isinstance(child, (dict, list)):
            child = {}
        if isinstance(node, list):
            node[int(part)] = child
        else:
            node[part] = child
        node = child
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
