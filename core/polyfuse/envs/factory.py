"""Making single and vector environments from an env config, with errors that say how to fix the id."""

from __future__ import annotations

import enum

import difflib
import importlib
import signal
from collections.abc import Mapping
from functools import partial
from importlib.metadata import entry_points
from typing import Any, Literal

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from polyfuse.envs import babyai
from polyfuse.envs.minigrid_view import use_indexed_view
from polyfuse.errors import PolyfuseError

EVAL_KWARGS_KEY = "polyfuse.eval_kwargs"
ENV_ENTRY_POINTS = "polyfuse.environments"


def check_env_id(env_id: str) -> None:
    """Raise a :class:`PolyfuseError` naming close matches (and the minigrid install) for an unknown id.

    ``module:EnvId`` (gymnasium's form) imports ``module`` first, so that it registers ``EnvId``.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the user's module failing to import is a config problem, not a crash
            raise PolyfuseError(f"env.id {env_id!r}: module {module!r} cannot be imported "
                                f"({type(exc).__name__}: {exc})") from None
        env_id = name
    if babyai.is_minigrid_id(env_id):
        babyai.import_minigrid()
    if env_id not in gym.registry:
        _register_plugin_env(env_id)
    if env_id in gym.registry:
        return
    hint = ""
    try:  # minigrid's ids become suggestions too
        babyai.import_minigrid()
    except PolyfuseError:
        hint = f" (BabyAI-*/MiniGrid-* levels need `{babyai.INSTALL_HINT}`)"
    message = f"no gymnasium environment named {env_id!r} is registered"
    known = [*gym.registry, *(entry.name for entry in entry_points(group=ENV_ENTRY_POINTS))]
    suggestions = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
    if suggestions:
        message += f"; did you mean {' or '.join(repr(s) for s in suggestions)}?"
    raise PolyfuseError(message + hint)


def _register_plugin_env(env_id: str) -> None:
    """Import the module a distribution names for ``env_id`` in the ``polyfuse.environments`` entry-point group.

    Plugins register their gymnasium ids there (the entry point's name is the id, its value the module
    that calls ``gymnasium.register`` when imported), so their environments are made by id like
    polyfuse's own, in every process, without importing them on every command.
    """
    for entry in entry_points(group=ENV_ENTRY_POINTS, name=env_id):
        try:
            importlib.import_module(entry.value)
        except Exception as exc:  # a broken plugin is a config problem, not a crash
            raise PolyfuseError(f"env.id {env_id!r}: {entry.value!r} (from distribution "
                                f"{entry.dist.name if entry.dist else '?'}) cannot be imported "
                                f"({type(exc).__name__}: {exc})") from None


def make_env(env_id: str, kwargs: Mapping[str, Any] | None = None, *, expert: bool = False,
             minigrid_view: Literal["indexed", "stock"] = "indexed") -> gym.Env:
    """One environment with text observations declared as Text spaces.

    ``expert=True`` asks for ``info["expert_action"]`` labels (supervised warm
    start); environments that label themselves (DigitsVQA) need nothing added,
    BabyAI levels get minigrid's bot. MiniGrid levels compute their view with
    :mod:`polyfuse.envs.minigrid_view` (the same observations, faster); ``"stock"``
    keeps MiniGrid's own, for benchmarks that time the simulator as others ship it.
    """
    check_env_id(env_id)
    try:
        env = gym.make(env_id, **dict(kwargs or {}))
    except TypeError as exc:
        raise PolyfuseError(f"env.kwargs do not fit {env_id}: {exc}") from None
    if babyai.is_minigrid_env(env):
        if minigrid_view == "indexed":
            use_indexed_view(env.unwrapped)
        level = babyai.is_babyai_level(env)
        if level:
            env = babyai.QuietLevelGeneration(env)
        env = babyai.FacingInfo(babyai.MissionAsText(env))
        if expert:
            if not level:
                raise PolyfuseError(
                    f"{env_id} has no expert to label warm-start data (only BabyAI levels have one); "
                    "remove trainer.warm_start"
                )
            env = babyai.BabyAIExpert(env)
    return env


def eval_kwargs(env_id: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The env kwargs for held-out evaluation: the env's ``metadata["polyfuse.eval_kwargs"]`` over ``kwargs``.

    DigitsVQA declares ``{"split": "test"}``; environments without such a
    split are evaluated on held-out seeds only.
    """
    env = make_env(env_id, kwargs)
    try:
        held_out = env.unwrapped.metadata.get(EVAL_KWARGS_KEY, {})
    finally:
        env.close()
    return {**dict(kwargs or {}), **held_out}


def action_names(env_id: str, kwargs: Mapping[str, Any] | None = None) -> tuple[str, ...] | None:
    """What each discrete action means, for people who look at the agent's behaviour; ``None`` if unknown.

    Read from the environment: DigitsVQA's ``answers``, MiniGrid's ``actions`` enum, or Atari-style
    ``get_action_meanings()``.
    """
    env = make_env(env_id, kwargs)
    try:
        inner = env.unwrapped
        if isinstance(getattr(inner, "answers", None), (tuple, list)):
            return tuple(str(answer) for answer in inner.answers)
        actions = getattr(inner, "actions", None)
        if isinstance(actions, type) and issubclass(actions, enum.Enum):
            return tuple(action.name for action in actions)
        if callable(getattr(inner, "get_action_meanings", None)):
            return tuple(str(meaning) for meaning in inner.get_action_meanings())
        return None
    finally:
        env.close()


def make_vector_env(
    env_id: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    num_envs: int,
    vectorization: str = "sync",
    seed: int | None = None,
    expert: bool = False,
) -> VectorEnv:
    """A same-step-autoreset vector env, reset once with ``seed`` so later unseeded resets stay reproducible.

    Sub-env ``i`` is seeded with ``seed + i`` (gymnasium's convention).
    """
    probe = make_env(env_id, kwargs, expert=expert)  # fails here, with a clear error, not in a worker
    probe.close()
    if vectorization == "async":
        env_fn = partial(_make_env_in_worker, env_id, dict(kwargs or {}), expert)
        envs: VectorEnv = AsyncVectorEnv(
            [env_fn] * num_envs,
            # gymnasium's shared memory garbles Text observations
            shared_memory=not _has_text(probe.observation_space),
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    elif vectorization == "sync":
        env_fn = partial(make_env, env_id, dict(kwargs or {}), expert=expert)
        envs = SyncVectorEnv([env_fn] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    elif vectorization == "native":
        envs = _native_vector_env(env_id, dict(kwargs or {}), num_envs, expert)
    else:
        raise PolyfuseError(f"env.vectorization must be 'sync', 'async' or 'native', got {vectorization!r}")
    if seed is not None:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
        envs.single_action_space.seed(seed)
    return envs


def _native_vector_env(env_id: str, kwargs: dict[str, Any], num_envs: int, expert: bool) -> VectorEnv:
    """The environment's own batched implementation, checked to autoreset as polyfuse's optimizers expect."""
    if gym.spec(env_id).vector_entry_point is None:
        raise PolyfuseError(
            f"env.vectorization: {env_id} has no native vectorised implementation (a gymnasium "
            "vector_entry_point); use 'sync' or 'async'"
        )
    if expert and babyai.is_minigrid_id(env_id):
        raise PolyfuseError("env.vectorization: native envs cannot add BabyAI expert labels; use 'sync'")
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    mode = envs.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        envs.close()
        raise PolyfuseError(
            f"env.vectorization: {env_id}'s native vector env autoresets with {mode}; polyfuse needs "
            "AutoresetMode.SAME_STEP (final observations in infos['final_obs']); use 'sync' or 'async'"
        )
    return envs


def _has_text(space: gym.Space) -> bool:
    if isinstance(space, gym.spaces.Text):
        return True
    children = getattr(space, "spaces", None)
    values = children.values() if isinstance(children, Mapping) else children or ()
    return any(_has_text(child) for child in values)


def _make_env_in_worker(env_id: str, kwargs: dict[str, Any], expert: bool) -> gym.Env:
    """Build an env in an AsyncVectorEnv worker, leaving Ctrl-C to the main process (which checkpoints)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import polyfuse.envs  # noqa: F401 - registers polyfuse's ids in a spawned worker

    return make_env(env_id, kwargs, expert=expert)
