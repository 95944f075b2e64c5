"""pytest fixtures and helpers for testing polyfuse plugins, loaded through the ``pytest11`` entry point.

A plugin's test suite gets a registry containing its plugin object without
installing anything::

    def test_my_fuser(make_registry):
        registry = make_registry(my_plugin_module)
        fuser = registry.create("fusers", "max-pool", {}, input_dims={"a": 4})

A fuser's or encoder's tests check its whole contract in one line with
:func:`check_fuser` and :func:`check_encoder` (from :mod:`polyfuse.contracts`)::

    check_fuser(lambda dims: MaxPoolFuser(dims, hidden_dim=8))

and, for a fuser that consumes spatial feature maps or an encoder that offers
them, :func:`check_spatial_fuser` and :func:`check_spatial_encoder`::

    check_spatial_fuser(lambda dims, maps: MapFuser(dims, maps, width=8))

An RL optimizer's tests train on small environments of their own through
:func:`snapshot_vector_env` and :func:`pipeline_for`, and check resuming with
:meth:`SnapshotVectorEnv.snapshot`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from polyfuse.contracts import (  # noqa: F401 - re-exported
    check_encoder,
    check_fuser,
    check_spatial_encoder,
    check_spatial_fuser,
)
from polyfuse.plugins import PluginSource, entry_point_sources
from polyfuse.registry import Registry


def plugin_source(plugin: object, name: str | None = None, distribution: str = "test-plugin") -> PluginSource:
    """Wrap a plugin object (a module or any object with hookimpls) as if an entry point named it."""
    label = name or getattr(plugin, "__name__", type(plugin).__name__)
    return PluginSource(name=label, distribution=distribution, version="0", target=label, load=lambda: plugin)


@pytest.fixture
def make_registry() -> Callable[..., Registry]:
    """Build a registry from the given plugin objects, after the installed plugins unless ``installed=False``."""

    def make(*plugins: object, installed: bool = True) -> Registry:
        sources = entry_point_sources() if installed else []
        return Registry.load([*sources, *(plugin_source(p) for p in plugins)])

    return make


class SnapshotVectorEnv:
    """A vector env that can be copied mid-run: the copy's first ``reset()`` resumes at the copied moment.

    Environment state is not an optimizer's, so a test comparing a run
    continued after ``load_state_dict`` with one continued directly needs the
    environments restored too.
    """

    def __init__(self, envs: Any) -> None:
        self.envs = envs
        self.num_envs = envs.num_envs
        self.single_observation_space = envs.single_observation_space
        self.single_action_space = envs.single_action_space
        self.metadata = envs.metadata
        self._last: Any = None
        self._resume = False

    def reset(self, seed: Any = None, options: Any = None) -> Any:
        if self._resume:
            self._resume = False
            return self._last
        self._last = self.envs.reset(seed=seed, options=options)
        return self._last

    def step(self, actions: Any) -> Any:
        result = self.envs.step(actions)
        self._last = (result[0], {})
        return result

    def snapshot(self) -> SnapshotVectorEnv:
        duplicate = copy.deepcopy(self)
        duplicate._resume = True
        return duplicate

    def close(self) -> None:
        self.envs.close()


def snapshot_vector_env(make_env: Callable[[], Any], num_envs: int = 4, seed: int = 0) -> SnapshotVectorEnv:
    """``num_envs`` copies of ``make_env()`` in a same-step-autoreset SyncVectorEnv, seeded once at creation
    like ``polyfuse.envs.make_vector_env`` (later resets continue the stream)."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    envs = SyncVectorEnv([make_env] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=seed)
    return SnapshotVectorEnv(envs)


def pipeline_for(envs: Any, make_network: Callable[[], Any], seed: int = 0, reward: Any = None) -> Any:
    """A :class:`polyfuse.training.Pipeline` over ``envs``, with the environment's own reward unless ``reward``."""
    from polyfuse.training import Pipeline, TrackedVectorEnv

    segment_length = getattr(reward, "segment_length", None)
    return Pipeline.for_envs(TrackedVectorEnv(envs, segment_length), make_network, seed, reward)
