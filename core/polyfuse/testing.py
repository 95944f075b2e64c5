"""pytest fixtures for testing polyfuse plugins, loaded automatically through the ``pytest11`` entry point.

A plugin's test suite gets a registry containing its plugin object without
installing anything::

    def test_my_fuser(make_registry):
        registry = make_registry(my_plugin_module)
        fuser = registry.create("fusers", "max-pool", {}, input_dims={"a": 4})
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

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
