"""Spatial feature maps in the encoder/fuser contract: small-cnn's forward_spatial, the spatial contract checks,
the network passing maps, and `polyfuse validate` refusing a map-consuming fuser over an encoder without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from polyfuse import ComponentConfig, hookimpl
from polyfuse.config import PipelineConfig
from polyfuse.declarations import consumes_maps
from polyfuse.encoders.small_cnn import SmallCNNEncoder
from polyfuse.fusion import Fuser
from polyfuse.network import build_network
from polyfuse.preflight import pipeline_problems
from polyfuse.testing import check_spatial_encoder, check_spatial_fuser


@pytest.mark.parametrize("mode", ["image", "grid"])
def test_small_cnn_offers_its_last_conv_map(mode) -> None:
    torch.manual_seed(0)
    encoder = SmallCNNEncoder((7, 7, 3), [8, 16], 12, pool_size=4, mode=mode, grid_values=11)
    assert encoder.feature_map_shape == (16, 7, 7)
    samples = np.random.default_rng(0).integers(0, 11, size=(3, 7, 7, 3), dtype=np.uint8)
    check_spatial_encoder(encoder, samples)


class MapMean(Fuser):
    """A toy spatial fuser: the map's per-channel mean, projected, plus every modality's projection."""

    def __init__(self, dims, maps, leak: bool = False, ignore_map: bool = False) -> None:
        super().__init__(dims, 6, map_shapes=maps)
        self.leak, self.ignore_map = leak, ignore_map
        self.vectors = torch.nn.ModuleDict({m: torch.nn.Linear(d, 6) for m, d in dims.items()})
        self.maps = torch.nn.ModuleDict({} if ignore_map else {m: torch.nn.Linear(s[0], 6) for m, s in maps.items()})

    def forward(self, features, present=None, maps=None):
        _, _, _, mask, inputs, map_inputs = self.spatial_inputs(features, present, maps)
        out = sum(torch.where(mask[m][:, None], self.vectors[m](x), 0.0) for m, x in inputs.items())
        for m, fmap in map_inputs.items():
            if self.ignore_map:
                continue
            if self.leak and maps and m in maps:
                fmap = maps[m]  # the raw map, missing rows and all
            pooled = self.maps[m](fmap.mean(dim=(2, 3)))
            out = out + torch.where(mask[m][:, None], pooled, 0.0)
        return out


def test_a_well_behaved_spatial_fuser_passes() -> None:
    check_spatial_fuser(lambda dims, maps: MapMean(dims, maps))


def test_the_spatial_checks_catch_a_fuser_that_ignores_its_map() -> None:
    with pytest.raises(AssertionError, match="does not depend on the feature map of 'image'"):
        check_spatial_fuser(lambda dims, maps: MapMean(dims, maps, ignore_map=True))


def test_the_spatial_checks_catch_nan_leaking_from_missing_map_rows() -> None:
    with pytest.raises(AssertionError, match="NaN in missing 'image' rows made the gradient"):
        check_spatial_fuser(lambda dims, maps: MapMean(dims, maps, leak=True))


def test_map_shapes_must_name_fused_modalities() -> None:
    with pytest.raises(ValueError, match="not among the fused modalities"):
        MapMean({"a": 3}, {"b": (2, 3, 3)})
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        MapMean({"a": 3}, {"a": (2, 3)})


class MapMeanConfig(ComponentConfig):
    modality: str = "image"


class SpatialPlugin:
    @hookimpl
    def register_fusers(self, register):
        @consumes_maps(lambda config, offers: [config.modality])
        def build(config, input_dims, map_shapes):
            return MapMean(input_dims, map_shapes)

        register("map-mean", build, config=MapMeanConfig)


def digits_config(encoder: dict) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 2},
        "modalities": {"image": {"encoder": encoder}},
        "fuser": {"name": "map-mean"},
        "optimizer": {"name": "ppo"},
    })


def test_validate_pairs_a_map_consuming_fuser_with_an_encoder_that_gives_maps(make_registry) -> None:
    registry = make_registry(SpatialPlugin())
    fuser_problems = [p for p in pipeline_problems(digits_config({"name": "small-cnn"}), registry) if p[0] == "fuser"]
    assert fuser_problems == []
    [(_path, message)] = [p for p in pipeline_problems(digits_config({"name": "flatten"}), registry)
                         if p[0] == "fuser"]
    assert message.startswith("fuser 'map-mean' consumes the spatial feature map of modality 'image', "
                              "but its encoder 'flatten' gives none")


def test_the_network_passes_maps_to_a_spatial_fuser(make_registry) -> None:
    registry = make_registry(SpatialPlugin())
    space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1), np.uint8)})
    network = build_network(digits_config({"name": "small-cnn", "params": {"channels": [4]}}), space, registry)
    assert network.fuser.map_shapes == {"image": network.encoders["image"].feature_map_shape}
    batch = {"image": np.random.default_rng(0).integers(0, 255, (2, 8, 8, 1), dtype=np.uint8)}
    assert network(batch).shape == (2, 6)
