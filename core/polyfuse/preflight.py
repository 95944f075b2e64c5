"""What a run would refuse, found before any training: ``polyfuse validate`` and ``polyfuse run`` both ask here.

Schema validation (:mod:`polyfuse.config`) knows each setting alone. This
module knows what they mean together and on this machine: whether the env id
exists, which observation keys and spaces it has (one env is made, its spaces
read, and it is closed), whether each encoder reads its key's kind of space
(from the encoder's cheap declaration, :mod:`polyfuse.declarations`, without
loading any model), whether ``output_dir`` can be written, whether the sizes fit
in memory (a coarse estimate), and whether the optimizer has the data it learns
from. Every problem comes back with its config path.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from polyfuse.components import Kind
from polyfuse.config import PipelineConfig, bounded_problems
from polyfuse.declarations import (
    declared_dataset_space,
    declared_feature_map,
    declared_learns_from,
    map_problem,
    modality_mismatch,
    space_mismatch,
)
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.registry import Registry
from polyfuse.yaml_safety import shorten

Problem = tuple[str, str]

MAX_NUM_ENVS = 65_536
"""More environments than this is refused outright (gymnasium makes one object, or process, per env)."""
ENV_PROBE_SECONDS = 10
"""Making one environment to read its spaces takes well under a second; longer means an absurd size."""
MAX_ENV_ID_LENGTH = 200
"""Longer env ids are refused unread: looking up near matches would take seconds."""
PER_ENV_BYTES = {"native": 1_024, "sync": 256 * 1024, "async": 64 * 1024 * 1024, "pipelined": 256 * 1024,
                 "ray": 256 * 1024}
"""Coarse memory of one environment beyond its observations: a Python object, or a whole process for async."""
PARAMETER_BYTES = 16
"""float32 weight, its gradient and two Adam moments."""
ACTIVATION_BYTES = 16
"""float32 activations of the widest layer a sample keeps for the backward pass (a few layers)."""
THREADS_PER_CPU = 4
"""trainer.num_threads past this many per CPU only slows a run (and far past it, fails)."""


def check_pipeline(config: PipelineConfig, registry: Registry, source: str = "config") -> None:
    """Raise :class:`ConfigError` with every problem a run of ``config`` would hit before training."""
    problems = pipeline_problems(config, registry)
    if problems:
        raise ConfigError(source, bounded_problems(problems))


def pipeline_problems(config: PipelineConfig, registry: Registry) -> list[Problem]:
    """Every problem found, each as ``(config path, cause and fix)``."""
    problems: list[Problem] = []
    env_spaces, env_problems = _env_spaces(config)
    problems += env_problems
    observation_space = env_spaces[0] if env_spaces else None
    problems += _ray_problems(config)
    if config.env is None:
        observation_space = _dataset_space(config, registry)
    if observation_space is not None:
        problems += _modality_problems(config, registry, observation_space)
    problems += _fuser_problems(config, registry)
    problems += _suite_problems(config, env_spaces)
    problems += _thread_problems(config.trainer.num_threads)
    problems += _writable("trainer.output_dir", config.trainer.output_dir)
    if config.feature_cache.directory is not None:
        problems += _writable("feature_cache.directory", config.feature_cache.directory)
    problems += _data_problems(config, registry)
    problems += _memory_problems(config, observation_space)
    return problems


# -- the environment and its spaces -------------------------------------------------------------------------


def _env_spaces(config: PipelineConfig) -> tuple[tuple[Any, Any] | None, list[Problem]]:
    """The env's observation and action spaces (one env made and closed), or the problems making it."""
    if config.env is None:
        return None, []
    if config.env.num_envs > MAX_NUM_ENVS:
        problem = (f"{config.env.num_envs} environments is more than polyfuse steps ({MAX_NUM_ENVS} at most); "
                   "a few to a few hundred is typical: lower it")
        return None, [("env.num_envs", problem)]
    return _probe_env(config.env.id, config.env.kwargs, "env", config.trainer.warm_start is not None)


def _suite_problems(config: PipelineConfig, trained: tuple[Any, Any] | None) -> list[Problem]:
    """Each ``trainer.eval_suite`` environment must exist and fit the policy (checked now, not after training)."""
    if config.trainer.eval_suite is None:
        return []
    from polyfuse.training.compatibility import check_compatible

    problems: list[Problem] = []
    for index, suite_env in enumerate(config.trainer.eval_suite):
        path = f"trainer.eval_suite[{index}]"
        spaces, found = _probe_env(suite_env.id, suite_env.kwargs, path, False)
        problems += found
        if spaces is None or trained is None:
            continue
        try:
            check_compatible(config.modalities, *trained, *spaces, f"{suite_env.label} ({suite_env.id})")
        except PolyfuseError as exc:
            problems.append((path, str(exc)))
    return problems


def _probe_env(env_id: str, kwargs: dict[str, Any], path: str, expert: bool) -> tuple[tuple[Any, Any] | None,
                                                                                  list[Problem]]:
    """One environment made and closed: its (observation, action) spaces, or the problems (at ``path``) making it."""
    if len(env_id) > MAX_ENV_ID_LENGTH:
        return None, [(f"{path}.id", (f"{shorten(env_id)} is not a gymnasium id (they look like "
                                      "polyfuse/DigitsVQA-v0 or BabyAI-GoToLocal-v0)"))]
    from polyfuse.envs import check_env_id, make_env

    try:
        check_env_id(env_id)
    except PolyfuseError as exc:
        return None, [(f"{path}.id", str(exc))]
    try:
        with _time_limit(ENV_PROBE_SECONDS):
            env = make_env(env_id, kwargs, expert=expert)
    except _ProbeTimeout:
        slow = f"{env_id} took more than {ENV_PROBE_SECONDS} s to create one environment; check {path}.kwargs for " \
               "sizes (e.g. room_size)"
        return None, [(f"{path}.kwargs", slow)]
    except PolyfuseError as exc:  # an env without an expert names trainer.warm_start, the rest are its kwargs
        return None, [("trainer.warm_start" if "warm_start" in str(exc) else f"{path}.kwargs", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a third-party env's constructor may raise anything
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None, [(path, f"{env_id} could not be created ({cause}); check {path}.kwargs")]
    try:
        observations, actions = env.observation_space, env.action_space
    finally:
        with contextlib.suppress(Exception):  # closing a probe env must not hide its space
            env.close()
    from gymnasium import spaces

    if not isinstance(observations, spaces.Dict):
        return None, [(f"{path}.id", (f"{env_id} observes a {type(observations).__name__} space; polyfuse reads "
                                      "Dict observations (one key per modality): wrap the env or choose another"))]
    return (observations, actions), []


def _ray_problems(config: PipelineConfig) -> list[Problem]:
    """env.vectorization: ray without Ray installed."""
    if config.env is None or config.env.vectorization != "ray":
        return []
    from polyfuse.sampling.ray_sampler import RAY_MISSING, ray_installed

    return [] if ray_installed() else [("env.vectorization", RAY_MISSING)]


class _ProbeTimeout(Exception):
    """The probe env was not made within its time."""


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`_ProbeTimeout` after ``seconds`` (main thread on POSIX only; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _ProbeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _dataset_space(config: PipelineConfig, registry: Registry) -> Any:
    """The dataset's observation space where its factory declares a cheap reader (else None: not checked)."""
    from gymnasium import spaces

    if config.dataset is None:
        return None
    try:
        component = registry.get(Kind.DATASET, config.dataset.name)
        dataset_config = component.config.model_validate(config.dataset.params)
    except (PolyfuseError, ValueError):
        return None  # reported by schema validation
    space = declared_dataset_space(component.factory, dataset_config)
    return space if isinstance(space, spaces.Dict) else None


def _modality_problems(config: PipelineConfig, registry: Registry, observation_space: Any) -> list[Problem]:
    problems: list[Problem] = []
    keys = list(observation_space.spaces)
    for modality, modality_config in config.modalities.items():
        key = modality_config.key or modality
        if key not in keys:
            where = f"modalities.{modality}.key" if modality_config.key else f"modalities.{modality}"
            how = "set key: to one of them" if modality_config.key else "rename the modality or add key: <one of them>"
            problems.append((where, (f"{config.env.id if config.env else 'the dataset'} has no observation key {key!r} "
                                    f"(it has {', '.join(map(repr, keys))}); {how}")))
            continue
        name = modality_config.encoder.name
        try:
            factory = registry.get(Kind.ENCODER, name).factory
        except PolyfuseError:
            continue  # reported by schema validation
        mismatch = space_mismatch(factory, name, observation_space.spaces[key])
        if mismatch:
            problems.append((f"modalities.{modality}.encoder", f"{mismatch} (observation key {key!r})"))
    return problems


def _fuser_problems(config: PipelineConfig, registry: Registry) -> list[Problem]:
    """The fuser's declared check against the modalities it will combine (no torch import)."""
    try:
        component = registry.get(Kind.FUSER, config.fuser.name)
        fuser_config = component.config.model_validate(config.fuser.params)
    except (PolyfuseError, ValueError):
        return []  # reported by schema validation
    mismatch = modality_mismatch(component.factory, fuser_config, list(config.modalities))
    if mismatch:
        return [("fuser.params", mismatch)]
    _, problem = map_problem(config.fuser.name, component.factory, fuser_config, _map_offers(config, registry))
    return [("fuser", problem)] if problem else []


def _map_offers(config: PipelineConfig, registry: Registry) -> dict[str, tuple[str, bool | None, str]]:
    """Each modality's encoder name, whether it declares a spatial feature map with its params, and the hint."""
    offers: dict[str, tuple[str, bool | None, str]] = {}
    for modality, modality_config in config.modalities.items():
        ref = modality_config.encoder
        try:
            component = registry.get(Kind.ENCODER, ref.name)
            offered, hint = declared_feature_map(component.factory, component.config.model_validate(ref.params))
        except (PolyfuseError, ValueError):
            offered, hint = None, ""  # reported by schema validation
        offers[modality] = (ref.name, offered, hint)
    return offers


def _thread_problems(num_threads: int) -> list[Problem]:
    cpus = os.cpu_count() or 1
    if num_threads <= max(THREADS_PER_CPU * cpus, 16):
        return []
    return [("trainer.num_threads", (f"{num_threads} torch threads on a machine with {cpus} CPUs; more threads "
                                    f"than CPUs only slow a run: set it to {cpus} or fewer"))]


# -- folders ---------------------------------------------------------------------------------------------------


def _writable(path: str, folder: Path) -> list[Problem]:
    """The folder exists as a folder and is writable, or its nearest existing parent is."""
    shown = shorten(str(folder)).replace("\0", "\\0")
    try:
        if "\0" in str(folder):
            raise ValueError("it contains a NUL character")
        return _writable_folder(path, folder, shown)
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [(path, f"{shown} is not a usable folder name ({reason}); choose a shorter, plain path")]


def _writable_folder(path: str, folder: Path, shown: str) -> list[Problem]:
    if folder.exists() and not folder.is_dir():
        return [(path, f"{shown} is a file, not a folder; choose another path or remove the file")]
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return [(path, f"{shown} cannot be created: {shorten(str(existing))} is a file; choose another path")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [(path, (f"{shown} cannot be written: no write permission on {shorten(str(existing))}; "
                       "choose a folder you can write"))]
    return []


# -- the optimizer's data ----------------------------------------------------------------------------------------


def _data_problems(config: PipelineConfig, registry: Registry) -> list[Problem]:
    """What the trainer's data check would refuse, from the optimizer's ``learns_from``.

    Read from the factory's declaration when it has one (no torch import), else
    from the optimizer object (factories are light until ``setup``).
    """
    try:
        learns_from = declared_learns_from(registry.get(Kind.OPTIMIZER, config.optimizer.name).factory)
        if learns_from is None:
            optimizer = registry.create(Kind.OPTIMIZER, config.optimizer.name, config.optimizer.params)
            learns_from = getattr(optimizer, "learns_from", None)
    except PolyfuseError as exc:
        return [("optimizer", str(exc))]
    except Exception:  # noqa: BLE001 - a plugin factory's failure is reported by the run, with its plugin named
        return []
    name = config.optimizer.name
    if learns_from == "env" and config.env is None:
        return [("env", f"optimizer {name!r} learns by stepping an environment; add env: {{id: ...}}")]
    if learns_from == "dataset":
        if config.dataset is None:
            return [("dataset", (f"optimizer {name!r} learns from a dataset; add dataset: {{name: preferences, "
                                "params: {path: ...}}"))]
        if config.trainer.budget_unit == "env_steps":
            return [("trainer.budget_unit", (f"optimizer {name!r} learns from a dataset and takes no environment "
                                            "steps; set budget_unit: gradient_steps (or samples)"))]
    if config.trainer.warm_start is not None and config.env is None:
        return [("trainer.warm_start", ("behaviour cloning follows the environment's expert; add env: {id: ...} "
                                       "or remove trainer.warm_start"))]
    return []


# -- memory -------------------------------------------------------------------------------------------------------


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
"""A container's memory limit (cgroup v2, v1): in CI it, not the host's memory, is what a run gets."""


def machine_memory() -> int:
    """Memory a run can use, in bytes: physical memory or the container's limit, whichever is less."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        available = 1 << 50
    for limit in CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            available = min(available, int(limit.read_text().strip()))  # "max" (no limit) is a ValueError
    return available


def observation_bytes(space: Any) -> int:
    """Bytes one observation takes in a buffer (Text: 4 bytes a character)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return sum(observation_bytes(s) for s in space.spaces.values())
    if isinstance(space, spaces.Text):
        return 4 * int(space.max_length)
    shape = getattr(space, "shape", None) or (1,)
    dtype = getattr(space, "dtype", None)
    itemsize = getattr(dtype, "itemsize", 8) or 8
    return math.prod(shape) * itemsize


def _memory_problems(config: PipelineConfig, observation_space: Any) -> list[Problem]:
    """A coarse estimate of the run's largest allocations against this machine's memory."""
    available = machine_memory()
    per_observation = observation_bytes(observation_space) if observation_space is not None else 0
    estimates: list[tuple[str, int, str]] = []
    if config.env is not None and config.env.num_envs <= MAX_NUM_ENVS:
        num_envs = config.env.num_envs
        per_env = PER_ENV_BYTES[config.env.vectorization] + 2 * per_observation
        estimates.append(("env.num_envs", num_envs * per_env, f"{num_envs} environments"))
    params = config.optimizer.params
    for key in ("buffer_size", "n_steps"):
        count = params.get(key)
        if isinstance(count, int) and per_observation:
            copies = 2 if key == "buffer_size" else (config.env.num_envs if config.env else 1)
            estimates.append((f"optimizer.params.{key}", count * copies * per_observation,
                              f"{key} {count} of {_size(per_observation)} observations"))
    widths = [(path, width) for ref_path, _, ref in config.component_refs()
              for path, width in _widths(ref.params, f"{ref_path}.params")]
    widths.sort(key=lambda item: item[1], reverse=True)
    if len(widths) >= 1:
        second = widths[1][1] if len(widths) > 1 else 1
        estimates.append((widths[0][0], widths[0][1] * max(second, 1) * PARAMETER_BYTES,
                          f"a {widths[0][1]} x {second} layer"))
    batch = params.get("batch_size")
    if "buffer_size" in params and isinstance(batch, int):  # a replay sample: copied out of the buffer whole
        widest = widths[0][1] if widths else 0
        per_sample = 2 * per_observation + ACTIVATION_BYTES * widest
        estimates.append(("optimizer.params.batch_size", batch * per_sample,
                          f"batches of {batch} samples of {_size(per_sample)}"))
    problems = [(path, (f"{what}: about {_size(need)}, more than this machine's {_size(available)} of memory; "
                       "lower it")) for path, need, what in estimates if need > available]
    total = sum(need for _, need, _ in estimates)
    if not problems and total > available:
        path, need, what = max(estimates, key=lambda item: item[1])
        problems.append((path, (f"the run needs about {_size(total)} (largest: {what}, {_size(need)}), more than "
                               f"this machine's {_size(available)} of memory; lower it")))
    return problems


def _widths(params: Any, path: str) -> list[tuple[str, int]]:
    """Layer widths in a component's params: ``*_dim`` values, ``hidden_sizes`` and ``channels`` entries."""
    found: list[tuple[str, int]] = []
    if not isinstance(params, dict):
        return found
    for key, value in params.items():
        if key.endswith("_dim") and isinstance(value, int) and not isinstance(value, bool):
            found.append((f"{path}.{key}", value))
        elif key in {"hidden_sizes", "channels"} and isinstance(value, list):
            found += [(f"{path}.{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, int)]
        elif isinstance(value, dict):
            found += _widths(value, f"{path}.{key}")
    return found


def _size(count: int) -> str:
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"
