"""Every hook spec is documented, exercised here, and usable by a plugin exactly as CONTRIBUTING.md shows.

Like datasette's suite: adding a hook without documenting it in its docstring
and in CONTRIBUTING.md, or without a ``test_hook_<name>`` below, fails CI.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import torch
from pydantic import Field

import polyfuse
from polyfuse import hookspecs
from polyfuse.components import Kind

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, "polyfuse_spec")
)


def test_every_kind_has_a_hook() -> None:
    assert sorted([kind.hook_name for kind in Kind] + ["register_commands"]) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_signature_and_example(hook: str) -> None:
    function = getattr(hookspecs, hook)
    doc = inspect.getdoc(function) or ""
    assert list(inspect.signature(function).parameters) == ["register"]
    assert "Factory context" in doc, f"{hook}: say what context the factory receives (or that there is none)"
    assert "Example::" in doc and f"def {hook}(register)" in doc, f"{hook}: give a runnable example"
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert f"`{hook}(register)`" in contributing, f"{hook} is not documented in CONTRIBUTING.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    assert f"test_hook_{hook}" in dir(sys.modules[__name__]), f"write test_hook_{hook} in {__file__}"


class WidthConfig(polyfuse.ComponentConfig):
    width: int = Field(3, gt=0)


class TestPlugin:
    """A plugin object registering one component of each kind, as a third party would."""

    @polyfuse.hookimpl
    def register_encoders(self, register):
        def build(config, space=None):
            from polyfuse.encoding import Encoder

            class Constant(Encoder):
                output_dim = config.width

                def forward(self, batch):
                    return torch.ones(len(batch), config.width)

            return Constant()

        register("test-constant", build, config=WidthConfig, description="Ones, for tests")

    @polyfuse.hookimpl
    def register_fusers(self, register):
        def build(config, input_dims):
            from polyfuse.fusion.concat import ConcatFuser

            return ConcatFuser(input_dims, output_dim=config.width)

        register("test-concat", build, config=WidthConfig, description="Concat, for tests")

    @polyfuse.hookimpl
    def register_rewards(self, register):
        def build(config, context=None):
            from polyfuse.rewards import EnvReward

            return EnvReward(scale=float(config.width))

        register("test-scaled", build, config=WidthConfig, description="Scaled env reward, for tests")

    @polyfuse.hookimpl
    def register_optimizers(self, register):
        register("test-optimizer", lambda config: ("optimizer", config.width), config=WidthConfig)

    @polyfuse.hookimpl
    def register_datasets(self, register):
        def build(config, observation_space=None, action_space=None):
            return ("dataset", config.width, observation_space)

        register("test-dataset", build, config=WidthConfig, description="A tuple, for tests")

    @polyfuse.hookimpl
    def register_feedback(self, register):
        def build(config, seed=0):
            from polyfuse.feedback import FeedbackSource, Label

            class Longer(FeedbackSource):
                def label(self, queries):
                    return [Label(float(len(q.second) > len(q.first)), confidence=1 / config.width) for q in queries]

            return Longer()

        register("test-longer", build, config=WidthConfig, description="Prefers the longer segment, for tests")

    @polyfuse.hookimpl
    def register_commands(self, register):
        def add_arguments(parser):
            parser.add_argument("words", nargs="+")

        def shout(args, registry):
            print(" ".join(args.words).upper(), len(registry.list("feedback", "test-*")))
            return 3

        register("test-shout", shout, arguments=add_arguments, help="upper-cases its words, for tests")


class ClashingCommands:
    @polyfuse.hookimpl
    def register_commands(self, register):
        register("run", lambda args, registry: 0, help="clashes with the core's own command")
        register("test-shout", lambda args, registry: 0, help="clashes with TestPlugin's")


@pytest.fixture
def registry(make_registry):
    return make_registry(TestPlugin(), installed=False)


def test_hook_register_encoders(registry) -> None:
    encoder = registry.create("encoders", "test-constant", {"width": 5}, space=None)
    assert encoder.output_dim == 5
    assert encoder(["a", "b"]).shape == (2, 5)


def test_hook_register_fusers(registry) -> None:
    fuser = registry.create("fusers", "test-concat", {"width": 4}, input_dims={"a": 2, "b": 3})
    assert fuser({"a": torch.zeros(6, 2), "b": torch.zeros(6, 3)}).shape == (6, 4)


def test_hook_register_rewards(registry) -> None:
    import numpy as np

    from polyfuse.rewards import RewardBatch

    source = registry.create("rewards", "test-scaled", {"width": 2}, context=None)
    batch = RewardBatch({}, np.zeros(2), np.array([1.0, -0.5]), np.zeros(2, bool), np.zeros(2, bool))
    assert source.score(batch).tolist() == [2.0, -1.0]


def test_hook_register_optimizers(registry) -> None:
    assert registry.create("optimizers", "test-optimizer", {"width": 7}) == ("optimizer", 7)
    component = registry.get("optimizers", "test-optimizer")
    assert component.plugin == "TestPlugin" and component.distribution == "test-plugin"


def test_hook_register_datasets(registry) -> None:
    assert registry.create("datasets", "test-dataset", {"width": 3}, observation_space="space") == ("dataset", 3, "space")
    assert registry.get("dataset", "test-dataset").kind.value == "datasets"


def test_hook_register_feedback(registry) -> None:
    import numpy as np

    from polyfuse.feedback import Label, Query
    from polyfuse.rewards import Segment

    def segment(steps):
        return Segment({}, np.zeros(steps, np.int64), np.zeros(steps, np.float32), [{}] * steps, True, False, 0)

    source = registry.create("feedback", "test-longer", {"width": 4}, seed=0)
    labels = source.label([Query(segment(1), segment(3)), Query(segment(2), segment(1))])
    assert labels == [Label(1.0, 0.25), Label(0.0, 0.25)]
    assert registry.get("feedback", "test-longer").kind.value == "feedback"
    with pytest.raises(ValueError, match="preference"):
        Label(0.3)


def test_hook_register_commands(make_registry, capsys, monkeypatch) -> None:
    from polyfuse import cli

    registry = make_registry(TestPlugin(), ClashingCommands(), installed=False)
    assert sorted(registry.commands) == ["test-shout"]
    assert registry.commands["test-shout"].help == "upper-cases its words, for tests"
    (clashing,) = [p for p in registry.plugins if p.errors]
    assert "'run' is one of polyfuse's own" in clashing.errors[0]
    assert "already registered by plugin" in clashing.errors[1]
    monkeypatch.setattr(cli.Registry, "load", classmethod(lambda cls, disabled=(): registry))
    assert cli.main(["test-shout", "a", "b"]) == 3
    assert capsys.readouterr().out == "A B 1\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "test-shout" in capsys.readouterr().out
    assert "upper-cases its words" in cli.build_parser(registry).format_help()


def test_core_commands_are_the_parsers_own() -> None:
    """A core command missing from CORE_COMMANDS would let a plugin's command of that name crash argparse."""
    import argparse

    from polyfuse import cli
    from polyfuse.plugins import CORE_COMMANDS

    (subcommands,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(subcommands.choices) == CORE_COMMANDS


def test_label_and_query_contract() -> None:
    import numpy as np

    from polyfuse.feedback import Label, Query, answer_problem
    from polyfuse.rewards import Segment

    one = Segment({}, np.zeros(1, np.int64), np.zeros(1, np.float32), [{}], True, False, 0)
    rating = Query(one, scale=5)
    assert not rating.is_comparison and Query(one, one).is_comparison
    assert answer_problem(rating, Label(rating=5)) is None
    assert "from 1 to 5" in answer_problem(rating, Label(rating=6))
    assert "asks for a rating" in answer_problem(rating, Label(1.0))
    assert "is a rating" in answer_problem(Query(one, one), Label(rating=2))
    with pytest.raises(ValueError, match="scale"):
        Query(one)
    with pytest.raises(ValueError, match="2 to 10 levels"):
        Query(one, scale=11)
    with pytest.raises(ValueError, match="either"):
        Label(1.0, rating=2)
    with pytest.raises(ValueError, match="whole number"):
        Label(rating=0)
