"""A pipeline naming the ``timm`` and ``sbert`` encoders validates, builds and encodes real observations.

Needs polyfuse-timm and polyfuse-sbert installed (``make setup`` installs every plugin).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gymnasium import spaces

import polyfuse
from polyfuse.config import validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.network import build_network
from polyfuse.plugins import entry_point_sources
from polyfuse.registry import Registry
from polyfuse.testing import plugin_source

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

OBSERVATION_SPACE = spaces.Dict(
    {
        "camera": spaces.Box(0, 255, (16, 16, 3), np.uint8),
        "mission": spaces.Text(64, charset="abcdefghijklmnopqrstuvwxyz "),
    }
)


class OptimizerPlugin:
    """An optimizer stand-in, so the test does not depend on an RL plugin being installed."""

    @polyfuse.hookimpl
    def register_optimizers(self, register):
        register("test-rl", lambda config: None, config=polyfuse.ComponentConfig, description="for tests")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load([*entry_point_sources(), plugin_source(OptimizerPlugin())])


def pipeline(**camera_params) -> dict:
    return {
        "env": {"id": "polyfuse/DigitsVQA-v0"},
        "modalities": {
            "image": {
                "key": "camera",
                "encoder": {"name": "timm", "params": {"model": "resnet10t", **camera_params}},
            },
            "mission": {"encoder": "sbert"},  # names no model: the bundled all-MiniLM-L6-v2
        },
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "optimizer": "test-rl",
        "feature_cache": {"memory_items": 1000},
    }


@pytest.fixture(scope="module")
def network(registry):
    config = validate_pipeline(pipeline(image_size=32), registry)
    return build_network(config, OBSERVATION_SPACE, registry)


def test_config_validates_with_every_default_filled_in(registry):
    config = validate_pipeline(pipeline(image_size=32), registry)
    image = config.modalities["image"].encoder.params
    assert image["model"] == "resnet10t" and image["image_size"] == 32
    assert image["trainable"] is False and image["checkpoint"] is None, "defaults recorded with the run"
    assert config.modalities["mission"].encoder.params["trainable"] is False


def test_config_mistakes_are_reported_with_their_paths(registry):
    data = pipeline(image_size=2)
    data["modalities"]["image"]["encoder"]["params"]["model"] = "resnet-10t"
    data["modalities"]["mission"]["encoder"] = {"name": "sbert", "params": {"normalise": True}}
    with pytest.raises(ConfigError) as caught:
        validate_pipeline(data, registry)
    paths = {path for path, _ in caught.value.problems}
    assert {
        "modalities.image.encoder.params.model",
        "modalities.image.encoder.params.image_size",
        "modalities.mission.encoder.params.normalise",
    } <= paths
    assert "did you mean 'resnet10t'" in str(caught.value)


def test_network_builds_on_the_encoders_output_dims(network):
    assert network.encoders["image"].output_dim == 512
    assert network.encoders["mission"].output_dim == 384
    assert network.fuser.input_dims == {"image": 512, "mission": 384}
    assert network.encoders["image"].modality == "image", "data errors will name the modality"
    assert not any(p.requires_grad for p in network.encoders.parameters()), "both frozen by default"


def test_network_encodes_raw_vector_env_batches_and_caches_frozen_features(network):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    missions = ("go to the red ball", "open the door", "go to the red ball", "open the door")
    before = network.cache_stats()
    fused = network({"camera": images, "mission": missions})
    assert fused.shape == (4, 32) and torch.isfinite(fused).all()
    again = network({"camera": images, "mission": missions})
    assert torch.allclose(fused, again, atol=1e-5), "cached features are the computed ones"
    stats = network.cache_stats()
    assert stats["mission/misses"] - before.get("mission/misses", 0) <= 2, "two distinct missions"
    assert stats["mission/hits"] - before.get("mission/hits", 0) >= 6
    assert stats["image/hits"] - before.get("image/hits", 0) >= 4, "the second pass hits every image"


def test_a_missing_modality_is_passed_to_the_fuser_as_missing(network):
    only_text = network({"mission": ("pick up the key",)})
    assert only_text.shape == (1, 32)


def test_bad_data_names_the_modality(network):
    with pytest.raises(ValueError, match=r"mission.*sample 1"):
        network({"mission": ("fine", 3)})
    nan_images = np.full((2, 16, 16, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match=r"image.*sample 0.*NaN"):
        network({"camera": nan_images, "mission": ("a", "b")})


def test_an_image_encoder_on_a_text_key_fails_at_build(registry):
    data = pipeline(image_size=32)
    data["modalities"]["image"]["key"] = "mission"
    config = validate_pipeline(data, registry)
    with pytest.raises(PolyfuseError, match="timm reads images"):
        build_network(config, OBSERVATION_SPACE, registry)
