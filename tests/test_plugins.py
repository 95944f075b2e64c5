"""Plugin discovery: one broken plugin never takes the others down, and switches select what loads."""

from __future__ import annotations

import types

import pytest
from pydantic import BaseModel

import polyfuse
from polyfuse.plugins import PluginSource
from polyfuse.registry import Registry
from polyfuse.testing import plugin_source


class Config(polyfuse.ComponentConfig):
    pass


def fuser_plugin(*names: str, config: object = Config, factory: object = lambda config, input_dims: None):
    """A plugin object registering fusers under ``names``."""

    class Plugin:
        @polyfuse.hookimpl
        def register_fusers(self, register):
            for name in names:
                register(name, factory, config=config, description=f"{name} fuser")

    return Plugin()


def failing_source(name: str, error: Exception) -> PluginSource:
    def load():
        raise error

    return PluginSource(name=name, distribution=f"dist-{name}", version="1.0", target=f"{name}_module", load=load)


def status(registry: Registry, name: str):
    return next(p for p in registry.plugins if p.name == name)


def test_plugin_failing_at_import_is_reported_and_others_work() -> None:
    registry = Registry.load(
        [failing_source("exploding", ImportError("No module named 'missing_dep'")),
         plugin_source(fuser_plugin("good"), name="fine")]
    )
    broken = status(registry, "exploding")
    assert broken.status == "broken"
    assert "missing_dep" in broken.errors[0]
    assert [c.name for c in registry.list("fusers")] == ["good"]
    assert status(registry, "fine").status == "loaded"


def test_duplicate_name_keeps_the_first_and_reports_the_second() -> None:
    first, second = fuser_plugin("shared", "only-first"), fuser_plugin("shared", "only-second")
    registry = Registry.load([plugin_source(first, name="first"), plugin_source(second, name="second")])
    assert registry.get("fusers", "shared").plugin == "first"
    assert registry.get("fusers", "only-second").plugin == "second"
    errors = status(registry, "second").errors
    assert len(errors) == 1 and "already registered by plugin 'first'" in errors[0]
    assert status(registry, "second").status == "broken"


class NotForbidding(BaseModel):
    width: int = 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ["Bad Name"]}, "invalid fuser name 'Bad Name'"),
        ({"names": ["ok"], "factory": "not callable"}, "is not callable"),
        ({"names": ["ok"], "config": dict}, "must be a polyfuse.ComponentConfig subclass"),
        ({"names": ["ok"], "config": NotForbidding}, "must forbid extra fields"),
    ],
)
def test_invalid_component_is_rejected_with_a_reason(kwargs, message) -> None:
    names = kwargs.pop("names")
    registry = Registry.load([plugin_source(fuser_plugin(*names, **kwargs), name="sloppy")])
    assert registry.list("fusers") == []
    assert message in status(registry, "sloppy").errors[0]


def test_hook_that_raises_is_contained() -> None:
    class Raising:
        @polyfuse.hookimpl
        def register_fusers(self, register):
            register("half", lambda config, input_dims: None, config=Config)
            raise RuntimeError("boom")

    registry = Registry.load([plugin_source(Raising(), name="raising"), plugin_source(fuser_plugin("other"))])
    assert "register_fusers raised RuntimeError: boom" in status(registry, "raising").errors
    assert [c.name for c in registry.list("fusers")] == ["other"], "a failed hook registers nothing"


def test_misspelt_hook_name_marks_the_plugin_broken() -> None:
    module = types.ModuleType("typo_plugin")

    @polyfuse.hookimpl
    def register_fuser(register):  # missing the final s
        register("never", lambda config, input_dims: None, config=Config)

    module.register_fuser = register_fuser
    registry = Registry.load([plugin_source(module), plugin_source(fuser_plugin("fine"))])
    plugin = status(registry, "typo_plugin")
    assert plugin.status == "broken" and "register_fuser" in plugin.errors[0]
    assert [c.name for c in registry.list("fusers")] == ["fine"]


def test_wrong_hook_arguments_mark_the_plugin_broken() -> None:
    class WrongArgs:
        @polyfuse.hookimpl
        def register_fusers(self, register, extra):
            pass

    registry = Registry.load([plugin_source(WrongArgs(), name="wrong-args")])
    assert status(registry, "wrong-args").status == "broken"
    assert "extra" in status(registry, "wrong-args").errors[0]


def sources_for_switches() -> list[PluginSource]:
    core = PluginSource("builtin-x", "polyfuse", "0", "m", load=lambda: fuser_plugin("core-fuser"))
    third = PluginSource("third", "polyfuse-third", "0", "m", load=lambda: fuser_plugin("third-fuser"))
    other = PluginSource("other", "polyfuse-other", "0", "m", load=lambda: fuser_plugin("other-fuser"))
    return [core, third, other]


def fuser_names(registry: Registry) -> list[str]:
    return [c.name for c in registry.list("fusers")]


def test_allowlist_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("POLYFUSE_PLUGINS", "polyfuse-third")
    registry = Registry.load(sources_for_switches())
    assert fuser_names(registry) == ["core-fuser", "third-fuser"]
    assert status(registry, "other").status == "disabled"


def test_empty_allowlist_loads_only_the_core(monkeypatch) -> None:
    monkeypatch.setenv("POLYFUSE_PLUGINS", "")
    assert fuser_names(Registry.load(sources_for_switches())) == ["core-fuser"]


def test_blocklist_environment_variable_and_disabled_argument(monkeypatch) -> None:
    monkeypatch.setenv("POLYFUSE_DISABLE_PLUGINS", "third")
    assert fuser_names(Registry.load(sources_for_switches())) == ["core-fuser", "other-fuser"]
    monkeypatch.delenv("POLYFUSE_DISABLE_PLUGINS")
    registry = Registry.load(sources_for_switches(), disabled=["polyfuse-other", "builtin-x"])
    assert fuser_names(registry) == ["third-fuser"], "-p no:NAME can disable core built-ins too"


def test_installed_entry_points_are_discovered() -> None:
    registry = Registry.load()
    core = [p for p in registry.plugins if p.distribution == "polyfuse"]
    assert {p.name for p in core} >= {"builtin-fusers", "builtin-rewards", "builtin-encoders"}
    assert all(p.status == "loaded" for p in core), [p.errors for p in core]
    assert registry.get("fusers", "gated").plugin == "builtin-fusers"


def fine_source() -> PluginSource:
    return plugin_source(fuser_plugin("good"), name="fine")


class PluginAbort(BaseException):
    """Stands for any BaseException a plugin raises that is not the user's Ctrl-C."""


@pytest.mark.parametrize("error", [SystemExit(1), SystemExit("bye"), PluginAbort("odd"), GeneratorExit()])
def test_plugin_exiting_at_import_is_isolated(error: BaseException) -> None:
    registry = Registry.load([failing_source("quitter", error), fine_source()])
    assert status(registry, "quitter").status == "broken"
    assert type(error).__name__ in status(registry, "quitter").errors[0]
    assert [c.name for c in registry.list("fusers")] == ["good"]


def test_hook_exiting_is_contained() -> None:
    class Quitter:
        @polyfuse.hookimpl
        def register_fusers(self, register):
            raise SystemExit(3)

    registry = Registry.load([plugin_source(Quitter(), name="quitter"), fine_source()])
    assert status(registry, "quitter").status == "broken"
    assert "SystemExit" in status(registry, "quitter").errors[0]
    assert [c.name for c in registry.list("fusers")] == ["good"]


def test_ctrl_c_while_loading_is_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        Registry.load([failing_source("slow", KeyboardInterrupt())])


def test_broken_plugins_notice_is_one_short_line() -> None:
    from polyfuse.plugins import broken_plugins_notice

    registry = Registry.load(
        [failing_source("a", ImportError("x" * 5000)), failing_source("b", SystemExit(1)),
         fine_source()]
    )
    notice = broken_plugins_notice(registry.plugins)
    assert notice is not None and "\n" not in notice and len(notice) < 200
    assert "a, b" in notice and "polyfuse plugins" in notice
    assert broken_plugins_notice(Registry.load([fine_source()]).plugins) is None


def test_cli_survives_an_installed_plugin_that_calls_sys_exit(tmp_path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "quitting_plugin.py").write_text("import sys\nsys.exit(1)\n")
    info = tmp_path / "quitting_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: quitting-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[polyfuse]\nquitter = quitting_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from polyfuse.cli import main; sys.exit(main(sys.argv[1:]))",
         "plugins", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert '"quitter"' in result.stdout, result.stderr
    assert "SystemExit" in result.stdout


def test_run_warns_once_about_broken_plugins(monkeypatch, capsys) -> None:
    import argparse

    import sys

    from polyfuse import run

    class FakeTrainer:
        def __init__(self, config, registry, resume=False) -> None:
            pass

        def run(self) -> dict:
            return {"interrupted": "SIGTERM", "steps": 0, "paths": {"checkpoint": "nowhere"}}

    monkeypatch.setitem(sys.modules, "polyfuse.training.trainer", types.SimpleNamespace(Trainer=FakeTrainer))
    monkeypatch.setattr(run, "resolve_config", lambda args, registry: types.SimpleNamespace(
        trainer=types.SimpleNamespace(output_dir="out")))
    registry = Registry.load([failing_source("quitter", SystemExit(1)), fine_source()])
    args = argparse.Namespace(config=None, resume=False, json=False, output_dir=None, steps=None, seed=None, nproc=None,
                              overrides=[])
    run.run_command(args, registry)
    err = capsys.readouterr().err
    assert err.count("failed to load") == 1 and "quitter" in err
    run.run_command(args, Registry.load([fine_source()]))
    assert "failed to load" not in capsys.readouterr().err
