"""Registration: the name, the config's validation, a light plugin module, and a README that keeps up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polyfuse_dqn.plugin
import pytest
from polyfuse.training import RLOptimizer
from polyfuse_dqn.plugin import DQNConfig
from pydantic import ValidationError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_registers_dqn(make_registry) -> None:
    registry = make_registry(polyfuse_dqn.plugin, installed=False)
    assert registry.names("optimizers") == ["dqn"]
    component = registry.get("optimizers", "dqn")
    assert component.config is DQNConfig and component.description
    optimizer = registry.create("optimizers", "dqn", {"n_step": 3, "hidden_sizes": [8, 8]})
    assert isinstance(optimizer, RLOptimizer)
    assert optimizer.config.n_step == 3 and optimizer.config.hidden_sizes == [8, 8]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"n_step": 0}, "n_step"),
        ({"tau": 0}, "tau"),
        ({"tau": 1.5}, "tau"),
        ({"gamma": 1.1}, "gamma"),
        ({"hidden_sizes": [64, 0]}, "hidden_sizes"),
        ({"epsilon_start": 0.1, "epsilon_end": 0.5}, "epsilon_end"),
        ({"learning_rat": 0.1}, "learning_rat"),  # a typo is an error, not a silently ignored setting
    ],
)
def test_bad_params_are_rejected(params, problem) -> None:
    with pytest.raises(ValidationError, match=problem):
        DQNConfig.model_validate(params)


def test_every_field_is_described() -> None:
    for name, field in DQNConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_the_plugin_module_imports_no_torch() -> None:
    code = "import sys, polyfuse_dqn.plugin; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_lists_every_field_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", text, flags=re.MULTILINE))
    defaults = DQNConfig().model_dump(mode="json")
    assert set(rows) == set(defaults)
    for name, default in defaults.items():
        assert rows[name].replace("_", "") == json.dumps(default).replace(" ", ""), name
