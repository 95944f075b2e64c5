"""Registration: ``dpo`` is found through the entry point, cheaply, with a validating config."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import polyfuse_dpo.plugin
import pytest
from polyfuse.catalogue import load_catalogue
from polyfuse.components import Kind
from polyfuse.config import validate_pipeline
from polyfuse.errors import ConfigError
from polyfuse.registry import Registry, default_registry
from polyfuse_dpo.plugin import DPOConfig
from pydantic import ValidationError


def test_plugin_registers_dpo(make_registry: Any) -> None:
    registry: Registry = make_registry(polyfuse_dpo.plugin, installed=False)
    component = registry.get(Kind.OPTIMIZER, "dpo")
    assert component.config is DPOConfig
    assert component.description
    from polyfuse_dpo.dpo import DPO

    optimizer = registry.create("optimizers", "dpo", {"beta": 0.2, "loss": "ipo"})
    assert isinstance(optimizer, DPO)
    assert optimizer.learns_from == "dataset"
    assert optimizer.config.beta == 0.2 and optimizer.config.loss == "ipo"


def test_installed_entry_point_provides_dpo() -> None:
    component = default_registry().get(Kind.OPTIMIZER, "dpo")
    assert component.distribution == "polyfuse-dpo"
    plugin = next(p for p in default_registry().plugins if p.distribution == "polyfuse-dpo")
    assert plugin.status == "loaded", plugin.errors


def test_catalogue_lists_dpo() -> None:
    entry = load_catalogue().find(Kind.OPTIMIZER, "dpo")
    assert entry is not None
    assert (entry.distribution, entry.entry_point) == ("polyfuse-dpo", "polyfuse_dpo.plugin")


def test_registration_imports_no_torch() -> None:
    code = (
        "import sys, polyfuse_dpo.plugin as p\n"
        "registered = []\n"
        "p.register_optimizers(lambda name, factory, **kw: registered.append(name))\n"
        "assert registered == ['dpo'], registered\n"
        "heavy = sorted(m for m in ('torch', 'gymnasium', 'numpy', 'polyfuse_dpo.dpo') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_defaults() -> None:
    assert DPOConfig().model_dump() == {
        "beta": 0.5, "loss": "dpo", "label_smoothing": 0.0, "learning_rate": 1e-3, "batch_size": 64,
        "gradient_steps": 1, "max_grad_norm": 1.0, "hidden_sizes": [64], "activation": "relu", "init_from": None,
    }


def test_every_field_is_documented() -> None:
    for name, field in DPOConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_the_variants_are_settings() -> None:
    assert DPOConfig(loss="ipo", beta=0.1).loss == "ipo"
    assert DPOConfig(loss="conservative", label_smoothing=0.1).label_smoothing == 0.1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bet": 0.1}, "Extra inputs"),  # misspelt
        ({"beta": 0}, "greater than 0"),
        ({"loss": "kto"}, "'dpo', 'ipo' or 'conservative'"),
        ({"loss": "conservative"}, "needs label_smoothing > 0"),
        ({"label_smoothing": 0.1}, "applies to loss 'conservative' only"),
        ({"loss": "ipo", "label_smoothing": 0.1}, "applies to loss 'conservative' only"),
        ({"loss": "conservative", "label_smoothing": 0.5}, "less than 0.5"),
        ({"learning_rate": 0}, "greater than 0"),
        ({"batch_size": 0}, "greater than 0"),
        ({"gradient_steps": 0}, "greater than 0"),
        ({"hidden_sizes": [0]}, "greater than 0"),
        ({"activation": "gelu"}, "'tanh' or 'relu'"),
        ({"total_steps": 1000}, "Extra inputs"),  # the budget is the trainer's
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DPOConfig.model_validate(params)


def test_a_config_error_names_the_param_path() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.params: .*needs label_smoothing > 0"):
        validate_pipeline({
            "env": {"id": "polyfuse/DigitsVQA-v0"},
            "dataset": {"name": "preferences", "params": {"path": "pairs"}},
            "modalities": {"image": {"encoder": "small-cnn"}},
            "fuser": "concat",
            "optimizer": {"name": "dpo", "params": {"loss": "conservative"}},
            "trainer": {"budget_unit": "gradient_steps"},
        })
