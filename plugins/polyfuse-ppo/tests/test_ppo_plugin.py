"""Registration: ``ppo`` is found through the entry point, cheaply, with a validating config."""

from __future__ import annotations

import subprocess
import sys

import polyfuse_ppo.plugin
import pytest
from polyfuse.catalogue import load_catalogue
from polyfuse.components import Kind
from polyfuse.registry import Registry, default_registry
from polyfuse_ppo.plugin import PPOConfig
from pydantic import ValidationError


def test_plugin_registers_ppo(make_registry) -> None:  # type: ignore[no-untyped-def]
    registry: Registry = make_registry(polyfuse_ppo.plugin, installed=False)
    component = registry.get(Kind.OPTIMIZER, "ppo")
    assert component.config is PPOConfig
    assert component.description
    from polyfuse_ppo.ppo import PPO

    optimizer = registry.create("optimizers", "ppo", {"n_steps": 32, "kl_coef": 0.1})
    assert isinstance(optimizer, PPO)
    assert optimizer.config.n_steps == 32 and optimizer.config.kl_coef == 0.1


def test_installed_entry_point_provides_ppo() -> None:
    component = default_registry().get(Kind.OPTIMIZER, "ppo")
    assert component.distribution == "polyfuse-ppo"
    plugin = next(p for p in default_registry().plugins if p.distribution == "polyfuse-ppo")
    assert plugin.status == "loaded", plugin.errors


def test_catalogue_lists_ppo() -> None:
    entry = load_catalogue().find(Kind.OPTIMIZER, "ppo")
    assert entry is not None
    assert (entry.distribution, entry.entry_point, entry.status) == ("polyfuse-ppo", "polyfuse_ppo.plugin", "stable")


def test_registration_imports_no_torch() -> None:
    code = (
        "import sys, polyfuse_ppo.plugin as p\n"
        "registered = []\n"
        "p.register_optimizers(lambda name, factory, **kw: registered.append(name))\n"
        "assert registered == ['ppo'], registered\n"
        "heavy = sorted(m for m in ('torch', 'gymnasium', 'numpy', 'polyfuse_ppo.ppo') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_defaults() -> None:
    config = PPOConfig()
    assert config.model_dump() == {
        "learning_rate": 1e-3, "lr_schedule": "constant", "n_steps": 64, "n_epochs": 8,
        "batch_size": 64, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "clip_range_vf": None,
        "normalize_advantage": True, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5, "target_kl": None,
        "lag_correction": "decoupled", "behaviour_weight_cap": None, "kl_coef": 0.0, "shared_trunk": True, "hidden_sizes": [64], "activation": "relu", "ortho_init": True,
        "adam_eps": 1e-5, "memory": 0, "sequence_length": 16,
    }


def test_every_field_is_documented() -> None:
    for name, field in PPOConfig.model_fields.items():
        assert field.description, f"{name} has no description"


@pytest.mark.parametrize(
    "params",
    [
        {"learnig_rate": 1e-3},  # misspelt
        {"learning_rate": 0},
        {"gamma": 1.5},
        {"gae_lambda": -0.1},
        {"clip_range": 0},
        {"n_steps": 0},
        {"kl_coef": -1},
        {"lag_correction": "vtrace"},
        {"behaviour_weight_cap": 0.5},
        {"hidden_sizes": [0]},
        {"lr_schedule": "cosine"},
        {"target_kl": 0},
        {"total_steps": 20_000},  # the run's budget comes from the trainer (set_budget), not a param
        {"memory": 32, "n_steps": 20},  # sequences of 16 do not tile a rollout of 20 steps
        {"memory": 32, "shared_trunk": False},  # both heads read the one memory
    ],
)
def test_invalid_params_are_refused(params: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        PPOConfig.model_validate(params)
