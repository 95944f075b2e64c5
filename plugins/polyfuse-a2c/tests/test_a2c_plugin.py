"""Registration and params: ``a2c`` comes from its entry point without torch, with SB3's defaults and checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from polyfuse.catalogue import load_catalogue
from polyfuse.components import Kind
from polyfuse.registry import default_registry
from polyfuse_a2c import plugin
from polyfuse_a2c.plugin import A2CConfig
from pydantic import ValidationError


def test_registered_by_the_plugin_module_and_its_entry_point(make_registry) -> None:  # type: ignore[no-untyped-def]
    from polyfuse_a2c.a2c import A2C

    created = make_registry(plugin, installed=False).create("optimizers", "a2c", {"returns": "monte-carlo"})
    assert isinstance(created, A2C) and created.config.returns == "monte-carlo"
    installed = default_registry().get(Kind.OPTIMIZER, "a2c")
    assert (installed.config, installed.distribution) == (A2CConfig, "polyfuse-a2c")
    assert installed.description
    entry = load_catalogue().find(Kind.OPTIMIZER, "a2c")
    assert entry is not None and (entry.distribution, entry.entry_point) == ("polyfuse-a2c", "polyfuse_a2c.plugin")


def test_registering_imports_neither_torch_nor_the_optimizer() -> None:
    script = (
        "import sys\nfrom polyfuse_a2c import plugin\nnames = []\n"
        "plugin.register_optimizers(lambda name, *args, **kwargs: names.append(name))\n"
        "loaded = [m for m in ('torch', 'numpy', 'gymnasium', 'polyfuse_a2c.a2c') if m in sys.modules]\n"
        "print(names, loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "['a2c'] []", done.stderr


def test_defaults_are_stable_baselines3s() -> None:
    config = A2CConfig()
    sb3 = {
        "learning_rate": 7e-4, "n_steps": 5, "gamma": 0.99, "gae_lambda": 1.0, "ent_coef": 0.0, "vf_coef": 0.5,
        "max_grad_norm": 0.5, "normalize_advantage": False, "optimizer": "rmsprop", "rmsprop_alpha": 0.99,
        "rmsprop_eps": 1e-5,
    }
    assert {key: getattr(config, key) for key in sb3} == sb3
    assert (config.returns, config.baseline, config.lr_schedule) == ("gae", True, "constant")
    undocumented = [name for name, field in A2CConfig.model_fields.items() if not field.description]
    assert not undocumented


@pytest.mark.parametrize(
    "params",
    [
        {"n_step": 5},  # misspelt
        {"learning_rate": 0},
        {"rmsprop_alpha": 1.0},
        {"optimizer": "sgd"},
        {"returns": "td"},
        {"baseline": False},  # GAE needs the critic
        {"returns": "monte-carlo", "baseline": False, "shared_trunk": False},  # a critic trunk for nothing
        {"total_steps": 1000},  # the budget is the trainer's
    ],
)
def test_invalid_params_are_refused(params: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        A2CConfig(**params)


def test_reinforce_settings_are_valid() -> None:
    assert not A2CConfig(returns="monte-carlo", baseline=False).baseline
    assert A2CConfig(returns="monte-carlo").baseline
