"""Plugin discovery: the one module that talks to pluggy and entry points.

Every plugin, the core's built-ins included, is an entry point in the
``polyfuse`` group. Each is loaded and asked to register on its own, so a
plugin that fails to import, registers a duplicate name or an invalid
component is reported as broken while every other plugin keeps working.
That includes a plugin that calls ``sys.exit()`` or raises another
``BaseException`` while loading: only the user's Ctrl-C (``KeyboardInterrupt``)
gets through, since no plugin may end the program that loads it.

Environment switches (read when plugins load):

- ``POLYFUSE_PLUGINS=name,name``: load only these third-party plugins
  (entry-point or distribution names); set it empty to load none. The core's
  built-ins always load.
- ``POLYFUSE_DISABLE_PLUGINS=name,name``: never load these, like the CLI's
  ``-p no:NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from polyfuse import hookspecs
from polyfuse.components import NAME_PATTERN, Component, InvalidComponentError, Kind, make_component

CORE_DISTRIBUTION = "polyfuse"
ENTRY_POINT_GROUP = "polyfuse"
ALLOWLIST_ENV = "POLYFUSE_PLUGINS"
BLOCKLIST_ENV = "POLYFUSE_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered and what went wrong."""

    name: str
    distribution: str
    version: str
    target: str
    status: str = "loaded"  # loaded | broken | disabled
    components: list[Component] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.target,
            "status": self.status,
            "components": [{"kind": c.kind.value, "name": c.name} for c in self.components],
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Command:
    """A ``polyfuse`` subcommand registered by a plugin (hook ``register_commands``)."""

    name: str
    handler: Callable[..., int]
    arguments: Callable[[Any], None] | None
    help: str
    plugin: str
    distribution: str


CORE_COMMANDS = frozenset({
    "plugins", "list", "validate", "schema", "run", "eval", "serve", "export", "preferences", "compare", "tune",
    "new-plugin",
})
"""polyfuse's own subcommands (:func:`polyfuse.cli.build_parser`), which a plugin's command may not shadow;
tests/test_hooks.py fails when the two lists disagree."""


@dataclass(frozen=True)
class PluginSource:
    """A plugin to load: normally an entry point, in tests an object handed over directly."""

    name: str
    distribution: str
    version: str
    target: str
    load: Callable[[], object]


def entry_point_sources() -> list[PluginSource]:
    """The installed entry points of the ``polyfuse`` group, core first, then by distribution."""
    sources = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        sources.append(
            PluginSource(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist else "unknown",
                version=dist.version if dist else "unknown",
                target=ep.value,
                load=ep.load,
            )
        )
    return sorted(sources, key=lambda s: (s.distribution != CORE_DISTRIBUTION, s.distribution, s.name))


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _is_enabled(source: PluginSource, disabled: set[str]) -> bool:
    names = {source.name, source.distribution}
    if names & (disabled | (_names_from_env(BLOCKLIST_ENV) or set())):
        return False
    allowed = _names_from_env(ALLOWLIST_ENV)
    return source.distribution == CORE_DISTRIBUTION or allowed is None or bool(names & allowed)


def load_plugins(
    sources: Iterable[PluginSource] | None = None, disabled: Iterable[str] = ()
) -> tuple[list[PluginInfo], dict[Kind, dict[str, Component]], dict[str, Command]]:
    """Load plugins and collect their components and commands, isolating each plugin's failures."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    blocked = set(disabled)
    infos: list[PluginInfo] = []
    components: dict[Kind, dict[str, Component]] = {kind: {} for kind in Kind}
    commands: dict[str, Command] = {}
    for source in entry_point_sources() if sources is None else sources:
        info = PluginInfo(source.name, source.distribution, source.version, source.target)
        infos.append(info)
        if not _is_enabled(source, blocked):
            info.status = "disabled"
            continue
        try:
            plugin = source.load()
            manager.register(plugin, name=source.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin, even one calling sys.exit(), must not end the others
            info.status = "broken"
            info.errors.append(f"failed to load: {describe_error(exc)}")
            continue
        try:
            manager.check_pending()  # a misspelt hook name would otherwise be ignored silently
        except pluggy.PluginValidationError as exc:
            manager.unregister(plugin)
            info.status = "broken"
            info.errors.append(f"failed to load: {type(exc).__name__}: {exc}")
            continue
        _collect_components(manager, info, components)
        _collect_commands(manager, info, commands)
        if info.errors:
            info.status = "broken"
    return infos, components, commands


def describe_error(exc: BaseException) -> str:
    """``Type: message``, spelling out ``sys.exit()`` (a bare ``SystemExit: 1`` looks like a crash)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


MAX_NAMES_IN_NOTICE = 4


def broken_plugins_notice(plugins: Iterable[PluginInfo]) -> str | None:
    """One short line naming the plugins that failed to load (``None`` if none did), for commands that
    would otherwise just miss their components; the details stay in ``polyfuse plugins``."""
    broken = [p.name for p in plugins if p.status == "broken"]
    if not broken:
        return None
    names = ", ".join(name[:40] for name in broken[:MAX_NAMES_IN_NOTICE])
    if len(broken) > MAX_NAMES_IN_NOTICE:
        names += f" and {len(broken) - MAX_NAMES_IN_NOTICE} more"
    plural = "s" if len(broken) > 1 else ""
    return f"warning: {len(broken)} installed plugin{plural} failed to load ({names}); see `polyfuse plugins`"


def _collect_components(
    manager: pluggy.PluginManager, info: PluginInfo, components: dict[Kind, dict[str, Component]]
) -> None:
    for kind in Kind:
        registered: list[Component] = []

        def register(name: Any, factory: Any = None, *, config: Any = None, description: Any = "") -> None:
            try:
                component = make_component(
                    kind, name, factory, config=config, description=description,
                    plugin=info.name, distribution=info.distribution,
                )
            except InvalidComponentError as exc:
                info.errors.append(str(exc))
                return
            existing = components[kind].get(name) or next((c for c in registered if c.name == name), None)
            if existing is not None:
                info.errors.append(
                    f"{kind.singular} {name!r} is already registered by plugin {existing.plugin!r} "
                    f"({existing.distribution}); this registration is ignored"
                )
                return
            registered.append(component)

        if not _call_own_hook(manager, info, kind.hook_name, register):
            continue
        for component in registered:
            components[kind][component.name] = component
            info.components.append(component)


def _collect_commands(manager: pluggy.PluginManager, info: PluginInfo, commands: dict[str, Command]) -> None:
    registered: dict[str, Command] = {}

    def register(name: Any, handler: Any = None, *, arguments: Any = None, help: Any = "") -> None:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            info.errors.append(f"command name {name!r} is invalid: use lowercase letters, digits, '-', '_' or '.'")
        elif not callable(handler) or (arguments is not None and not callable(arguments)):
            info.errors.append(f"command {name!r}: handler (and arguments, when given) must be callables")
        elif name in CORE_COMMANDS:
            info.errors.append(f"command {name!r} is one of polyfuse's own; this registration is ignored")
        elif name in commands or name in registered:
            owner = (commands.get(name) or registered[name]).plugin
            info.errors.append(f"command {name!r} is already registered by plugin {owner!r}; "
                               "this registration is ignored")
        else:
            registered[name] = Command(name, handler, arguments, str(help), info.name, info.distribution)

    if _call_own_hook(manager, info, "register_commands", register):
        commands.update(registered)


def _call_own_hook(manager: pluggy.PluginManager, info: PluginInfo, hook_name: str, register: Any) -> bool:
    """Call one plugin's own implementation of ``hook_name``; whatever it raises (Ctrl-C aside) is its error."""
    others = [p for name, p in manager.list_name_plugin() if name != info.name]
    try:
        manager.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        info.errors.append(f"{hook_name} raised {describe_error(exc)}")
        return False
    return True
