"""The ``timm`` encoder on real (small, randomly initialised) timm architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from PIL import Image

from polyfuse.errors import PolyfuseError

RNG = np.random.default_rng(0)


def images(batch: int = 3, size: int = 8, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet():
    """resnet10t at 32x32, frozen: the workhorse of these tests."""
    from polyfuse_timm.plugin import TimmConfig, build_timm

    encoder = build_timm(TimmConfig(model="resnet10t", image_size=32, feature_map=-1))
    encoder.modality = "camera"
    return encoder


@pytest.mark.parametrize(("model", "width"), [("resnet10t", 512), ("mobilenetv3_small_050", 1024)])
def test_pooled_features_have_the_declared_width(build, model, width):
    encoder = build({"model": model, "image_size": 32}, space=spaces.Box(0, 255, (8, 8, 3), np.uint8))
    features = encoder(images(4))
    assert features.shape == (4, encoder.output_dim) == (4, width)
    assert torch.isfinite(features).all()


def test_small_inputs_are_resized_to_the_models_input_size(build):
    default = build({"model": "resnet10t"})
    assert default.input_size == (176, 176), "timm's data config for resnet10t"
    assert default.preprocess(images(2, size=8)).shape == (2, 3, 176, 176)
    grid = build({"model": "resnet10t", "image_size": 28, "interpolation": "nearest"})
    cells = images(1, size=7)
    upscaled = grid.preprocess(cells)
    assert upscaled.shape == (1, 3, 28, 28)
    block = upscaled[0, :, :4, :4].reshape(3, -1)
    assert torch.allclose(block, block[:, :1].expand_as(block)), "nearest keeps each cell a uniform 4x4 block"


def test_normalisation_follows_the_data_config(resnet):
    white = resnet.preprocess(np.full((1, 32, 32, 3), 255, np.uint8))
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(white[0, :, 0, 0], expected, atol=1e-5)


def test_uint8_arrays_pil_images_and_float_tensors_agree(resnet):
    batch = images(3)
    reference = resnet(batch)
    from_pil = resnet([Image.fromarray(image) for image in batch])
    from_tensor = resnet(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
    from_list = resnet(list(batch))
    assert torch.allclose(reference, from_pil, atol=1e-5)
    assert torch.allclose(reference, from_tensor, atol=1e-5)
    assert torch.allclose(reference, from_list, atol=1e-5)


def test_grayscale_and_rgba_become_rgb(resnet):
    gray = images(2, channels=1)
    as_rgb = resnet(np.repeat(gray, 3, axis=3))
    assert torch.allclose(resnet(gray), as_rgb, atol=1e-5)
    assert torch.allclose(resnet(gray[..., 0]), as_rgb, atol=1e-5), "(B, H, W) without a channel axis"
    assert torch.allclose(resnet([Image.fromarray(g[..., 0], mode="L") for g in gray]), as_rgb, atol=1e-5)
    rgb = images(2)
    rgba = np.concatenate([rgb, np.full((2, 8, 8, 1), 7, np.uint8)], axis=3)
    assert torch.allclose(resnet(rgba), resnet(rgb), atol=1e-5)


def test_bad_data_names_the_modality_and_sample(resnet):
    floats = np.zeros((4, 8, 8, 3), np.float32)
    floats[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"modality 'camera': sample 2 contains NaN"):
        resnet(floats)
    floats[2] = 0.5
    floats[3, 0, 0, 1] = 200.0
    with pytest.raises(ValueError, match=r"modality 'camera': sample 3 has values outside \[0, 1\]"):
        resnet(floats)
    with pytest.raises(ValueError, match=r"modality 'camera': sample 1 has shape \(3, 9, 9\)"):
        resnet([images(1)[0], images(1, size=9)[0]])
    with pytest.raises(ValueError, match=r"modality 'camera': .*looks channels-first"):
        resnet(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"modality 'camera': expected a batch of images, got str"):
        resnet("a picture")
    with pytest.raises(ValueError, match=r"modality 'camera': sample 0 is not an image"):
        resnet(["not", "images"])


def test_wrong_space_is_refused_at_build(build):
    with pytest.raises(PolyfuseError, match="timm reads images"):
        build({"model": "resnet10t"}, space=spaces.Discrete(3))


def test_frozen_encoder_is_constant_and_cacheable(resnet):
    assert not resnet.trainable
    resnet.train()
    assert not resnet.model.training, "frozen: eval mode whatever the policy does"
    batch = images(2)
    first = resnet(batch)
    assert not first.requires_grad
    assert torch.equal(first, resnet(batch))
    identity = resnet.identity()
    assert identity == resnet.identity() and identity.startswith("timm:resnet10t:")


def test_identity_changes_with_weights_and_preprocessing(build):
    torch.manual_seed(0)
    a = build({"model": "resnet10t", "image_size": 32})
    torch.manual_seed(0)
    same = build({"model": "resnet10t", "image_size": 32})
    torch.manual_seed(1)
    other_weights = build({"model": "resnet10t", "image_size": 32})
    torch.manual_seed(0)
    other_size = build({"model": "resnet10t", "image_size": 48})
    assert a.identity() == same.identity()
    assert a.identity() != other_weights.identity()
    assert a.identity() != other_size.identity()


def test_fine_tuning_sends_gradients_through_the_model(build):
    encoder = build({"model": "resnet10t", "image_size": 32, "trainable": True})
    assert encoder.trainable and encoder.model.training
    encoder(images(2)).pow(2).sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads) and encoder.model.conv1[0].weight.grad.abs().sum() > 0


def test_trainable_stages_freezes_all_but_the_last(build):
    encoder = build({"model": "resnet10t", "image_size": 32, "trainable": True, "trainable_stages": 1})
    trainable = {name.split(".")[1] for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    encoder.train()
    assert not encoder.model.layer3.training and not encoder.model.bn1.training
    assert encoder.model.layer4.training
    frozen_stats = encoder.model.layer3[0].bn1.running_mean.clone()
    tuned_stats = encoder.model.layer4[0].bn1.running_mean.clone()
    encoder(images(4)).sum().backward()
    assert torch.equal(encoder.model.layer3[0].bn1.running_mean, frozen_stats), "frozen BatchNorm stays fixed"
    assert not torch.equal(encoder.model.layer4[0].bn1.running_mean, tuned_stats)
    assert encoder.model.layer3[0].conv1.weight.grad is None
    with pytest.raises(PolyfuseError, match="has 5 stages"):
        build({"model": "resnet10t", "image_size": 32, "trainable": True, "trainable_stages": 6})


def test_trainable_stages_on_efficientnet(build):
    encoder = build({"model": "efficientnet_b0", "image_size": 32, "trainable": True, "trainable_stages": 1})
    trainable = {name.rsplit(".", 2)[0] for name, p in encoder.model.named_parameters() if p.requires_grad}
    assert any(name.startswith("blocks.5") for name in trainable)
    assert not any(name.startswith(("blocks.4", "conv_stem", "bn1")) for name in trainable)
    assert encoder.model.conv_head.weight.requires_grad


def test_spatial_feature_map_for_spatial_fusers(resnet, build):
    batch = images(2)
    pooled, feature_map = resnet.forward_spatial(batch)
    assert feature_map.shape == (2, *resnet.feature_map_shape) == (2, 512, 1, 1)
    assert torch.allclose(pooled, resnet(batch), atol=1e-5)
    early = build({"model": "resnet10t", "image_size": 64, "feature_map": 2})
    assert early.feature_map_shape == (128, 8, 8), "stage 2 of resnet10t: stride 8"
    vit = build({"model": "vit_tiny_patch16_224", "image_size": 32, "feature_map": -1})
    assert vit.feature_map_shape == (192, 2, 2) and vit(images(1)).shape == (1, 192)
    with pytest.raises(PolyfuseError, match="set the timm encoder's params.feature_map"):
        build({"model": "resnet10t", "image_size": 32}).forward_spatial(batch)
    with pytest.raises(PolyfuseError, match="has no stage 9"):
        build({"model": "resnet10t", "image_size": 32, "feature_map": 9})
