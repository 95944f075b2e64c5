"""Look-up of components by kind and name, with errors that say how to fix a wrong name."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from polyfuse.catalogue import Catalogue, CatalogueEntry, load_catalogue
from polyfuse.components import Component, Kind
from polyfuse.errors import PolyfuseError, UnknownComponentError
from polyfuse.plugins import Command, PluginInfo, PluginSource, load_plugins

KIND_ALIASES = {
    **{kind.value: kind for kind in Kind},
    **{kind.singular: kind for kind in Kind},
}


def parse_kind(kind: Kind | str) -> Kind:
    """Accept a :class:`Kind` or its CLI spelling (``fusers``; the singular ``fuser`` works too)."""
    if isinstance(kind, Kind):
        return kind
    try:
        return KIND_ALIASES[kind.lower()]
    except KeyError:
        choices = ", ".join(k.value for k in Kind)
        close = difflib.get_close_matches(kind.lower(), [k.value for k in Kind], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PolyfuseError(f"unknown component kind {kind!r}; {hint}choose one of: {choices}") from None


class Registry:
    """The installed components, grouped by kind, plus the catalogue of installable ones."""

    def __init__(
        self,
        plugins: list[PluginInfo],
        components: dict[Kind, dict[str, Component]],
        catalogue: Catalogue,
        commands: dict[str, Command] | None = None,
    ) -> None:
        self.plugins = plugins
        self._components = components
        self.catalogue = catalogue
        self.commands = commands or {}

    @classmethod
    def load(
        cls, sources: Iterable[PluginSource] | None = None, disabled: Iterable[str] = ()
    ) -> Registry:
        """Discover plugins (entry points unless ``sources`` is given) and build a registry."""
        plugins, components, commands = load_plugins(sources, disabled)
        return cls(plugins, components, load_catalogue(), commands)

    def list(self, kind: Kind | str | None = None, pattern: str = "*") -> list[Component]:
        """Installed components, sorted by kind and name; ``pattern`` is an fnmatch wildcard."""
        kinds = list(Kind) if kind is None else [parse_kind(kind)]
        return [
            component
            for k in kinds
            for name, component in sorted(self._components[k].items())
            if fnmatch.fnmatchcase(name, pattern)
        ]

    def not_installed(self, kind: Kind | str | None = None, pattern: str = "*") -> list[CatalogueEntry]:
        """Catalogue entries matching ``pattern`` that no installed plugin provides."""
        kinds = list(Kind) if kind is None else [parse_kind(kind)]
        return [
            entry
            for k in kinds
            for entry in self.catalogue.of_kind(k)
            if entry.name not in self._components[k] and fnmatch.fnmatchcase(entry.name, pattern)
        ]

    def names(self, kind: Kind | str) -> list[str]:
        return sorted(self._components[parse_kind(kind)])

    def get(self, kind: Kind | str, name: str) -> Component:
        kind = parse_kind(kind)
        try:
            return self._components[kind][name]
        except KeyError:
            raise UnknownComponentError(self.explain_unknown(kind, name)) from None

    def create(self, kind: Kind | str, name: str, params: Any = None, **context: Any) -> Any:
        """Build a component by name: ``create("fusers", "gated", {"hidden_dim": 64}, input_dims=...)``."""
        return self.get(kind, name).build(params, **context)

    def explain_unknown(self, kind: Kind, name: str) -> str:
        """Why ``name`` is not available and what to do: a typo, a missing install, a broken plugin."""
        message = f"no {kind.singular} named {name!r} is installed"
        entry = self.catalogue.find(kind, name)
        if entry is not None:
            broken = self._broken_plugin_of(entry.distribution)
            if broken is not None:
                return (
                    f"{message}: it comes from {entry.distribution}, which is installed but broken "
                    f"({'; '.join(broken.errors)}); see `polyfuse plugins`"
                )
            return f"{message}; it is provided by {entry.distribution}: {entry.install_command}"
        suggestions = difflib.get_close_matches(
            name, self.names(kind) + [e.name for e in self.catalogue.of_kind(kind)], n=3, cutoff=0.6
        )
        if suggestions:
            quoted = " or ".join(repr(s) for s in dict.fromkeys(suggestions))
            return f"{message}; did you mean {quoted}?"
        installed = ", ".join(self.names(kind)) or "none"
        return f"{message}; installed {kind.value}: {installed} (see `polyfuse list {kind.value} --all`)"

    def _broken_plugin_of(self, distribution: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.distribution == distribution and p.status == "broken"), None)


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of everything installed, loaded once per process on first use."""
    return Registry.load()
