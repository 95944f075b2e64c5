"""Registration and config validation of the ``timm`` encoder."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

import polyfuse_timm.plugin
from polyfuse.config import validate_pipeline
from polyfuse.errors import ConfigError
from polyfuse.plugins import entry_point_sources
from polyfuse.registry import Registry
from polyfuse.testing import plugin_source
from polyfuse_timm.plugin import TimmConfig


def test_registered_as_timm(make_registry):
    registry = make_registry(polyfuse_timm.plugin, installed=False)
    component = registry.get("encoders", "timm")
    assert component.config is TimmConfig
    assert "timm" in component.description


def test_registration_imports_neither_torch_nor_timm():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, polyfuse_timm.plugin; print([m for m in ('torch', 'timm') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_unknown_model_gets_suggestions_from_timm():
    with pytest.raises(ValidationError, match=r"unknown timm model 'resnet-18'; did you mean 'resnet18'"):
        TimmConfig(model="resnet-18")
    with pytest.raises(
        ValidationError, match=r"has no pretrained tag 'resnet18.nope'; its tags: \[.*a1_in1k"
    ):
        TimmConfig(model="resnet18.nope")
    assert TimmConfig(model="resnet18.a1_in1k").model == "resnet18.a1_in1k"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "resnet10t", "image_size": 4}, "greater than or equal to 8"),
        ({"model": "resnet10t", "trainable_stages": 1}, "trainable_stages needs trainable: true"),
        ({"model": "resnet10t", "pretrained": True, "checkpoint": "w.pth"}, "drop pretrained"),
        ({"model": "resnet10t", "model_kwargs": {"num_classes": 10}}, "num_classes cannot be set here"),
        ({"model": "resnet10t", "pretrianed": True}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_mistakes(params, message):
    with pytest.raises(ValidationError, match=message):
        TimmConfig.model_validate(params)


def test_pipeline_config_reports_the_path():
    core = [source for source in entry_point_sources() if source.distribution == "polyfuse"]
    registry = Registry.load([*core, plugin_source(polyfuse_timm.plugin)])
    config = {
        "env": {"id": "polyfuse/DigitsVQA-v0"},
        "modalities": {"image": {"encoder": {"name": "timm", "params": {"model": "resnet-10t"}}}},
        "fuser": "concat",
        "optimizer": "ppo",  # may not be installed alongside: only the encoder's problem is checked
    }
    with pytest.raises(ConfigError) as caught:
        validate_pipeline(config, registry)
    paths = [path for path, _ in caught.value.problems]
    assert "modalities.image.encoder.params.model" in paths
    assert "did you mean 'resnet10t'" in str(caught.value)
