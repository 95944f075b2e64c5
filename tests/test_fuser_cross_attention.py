"""Tests of the ``cross-attention`` fuser (MulT-style cross-modal transformer); its contract and learning
checks over the registration are in ``test_fusers_bilinear.py``."""

from __future__ import annotations

import torch
from polyfuse.contracts import check_spatial_fuser
from polyfuse.fusion.cross_attention import CrossAttentionFuser

torch.set_num_threads(1)

DIMS = {"image": 7, "text": 5, "audio": 3}


def fuser(**kwargs: object) -> CrossAttentionFuser:
    torch.manual_seed(0)
    params = {"output_dim": 8, "dim": 16, "heads": 2, "layers": 2} | kwargs
    return CrossAttentionFuser(DIMS, **params).eval()  # type: ignore[arg-type]


def features(batch: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {m: torch.randn(batch, d, generator=generator) for m, d in DIMS.items()}


def test_a_sample_with_one_modality_is_its_own_tokens_through_the_mlps() -> None:
    """With every other modality missing, attention adds exactly zero: no NaN, no dependence on them."""
    model, x = fuser(tokens_per_modality=3), features()
    only_image = {m: torch.tensor([m == "image"] * 5) for m in DIMS}
    out = model(x, only_image)
    assert torch.isfinite(out).all()
    tokens = model.tokenizers["image"](x["image"])
    for layer in model.layers["image"]:
        tokens = tokens + layer.ff(layer.norm_ff(tokens))
    expected = model.output(model.norm(tokens).mean(dim=1))
    torch.testing.assert_close(out, expected)


def test_missing_modalities_are_masked_as_keys() -> None:
    model, x = fuser(), features()
    present = {"image": torch.ones(5, dtype=torch.bool), "text": torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool),
               "audio": torch.ones(5, dtype=torch.bool)}
    reference = model(x, present)
    noisy = {**x, "text": torch.where(present["text"][:, None], x["text"], 1e3 * torch.randn(5, 5))}
    torch.testing.assert_close(model(noisy, present), reference)
    changed = model({**x, "text": x["text"] + 1.0}, present)
    assert not torch.allclose(changed[present["text"]], reference[present["text"]])


def test_no_modality_at_all_gives_the_output_bias() -> None:
    model, x = fuser(), features()
    out = model(x, {m: torch.zeros(5, dtype=torch.bool) for m in DIMS})
    torch.testing.assert_close(out, model.output.bias.expand(5, -1))


def test_tokens_per_modality_sets_the_sequence_length() -> None:
    model = fuser(tokens_per_modality=4)
    assert model.tokenizers["text"](features()["text"]).shape == (5, 4, 16)
    assert model(features()).shape == (5, 8)


def test_feature_maps_become_one_token_per_position() -> None:
    model = CrossAttentionFuser(DIMS, 8, 16, 2, 1, map_shapes={"image": (4, 3, 2)}).eval()
    fmap = torch.randn(5, 4, 3, 2)
    assert model.map_tokenizers["image"](fmap).shape == (5, 6, 16)
    x = features()
    out = model(x, maps={"image": fmap})
    assert not torch.allclose(out, model(x, maps={"image": fmap + 1.0}))


def test_follows_the_spatial_fuser_contract() -> None:
    check_spatial_fuser(lambda dims, maps: CrossAttentionFuser(dims, 8, 16, 2, 2, tokens_per_modality=2,
                                                               map_shapes=maps))


def test_feature_maps_are_an_option_of_the_registered_fuser(tmp_path):
    """Without feature_maps it fuses vectors (any encoders); with it, the small-cnn map's positions are tokens."""
    import numpy as np
    import pytest
    import torch
    from gymnasium import spaces
    from polyfuse.config import validate_pipeline
    from polyfuse.errors import PolyfuseError
    from polyfuse.network import build_network
    from polyfuse.registry import default_registry

    registry = default_registry()
    space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1), np.uint8), "flag": spaces.Box(0, 1, (3,), np.float32)})

    def network(image_encoder, **params):
        config = validate_pipeline({
            "env": {"id": "polyfuse/DigitsVQA-v0"},
            "modalities": {"image": {"encoder": image_encoder}, "flag": {"encoder": "vector"}},
            "fuser": {"name": "cross-attention", "params": {"output_dim": 16, "dim": 16, "heads": 2, **params}},
            "reward": "env", "optimizer": {"name": "dqn"}, "trainer": {"output_dir": str(tmp_path)}}, registry)
        return build_network(config, space, registry)

    assert network("flatten").fuser.map_shapes == {}
    spatial = network("small-cnn", feature_maps=True)
    assert set(spatial.fuser.map_shapes) == {"image"}
    batch = {"image": np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1), dtype=np.uint8),
             "flag": np.zeros((4, 3), np.float32)}
    out = spatial(batch)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    with pytest.raises(PolyfuseError, match="no modality's encoder gives one"):
        network("flatten", feature_maps=True)
