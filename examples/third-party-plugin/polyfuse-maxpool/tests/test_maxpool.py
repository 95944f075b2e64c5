import torch

import polyfuse_maxpool.plugin


def test_max_pool_through_the_registry(make_registry):
    registry = make_registry(polyfuse_maxpool.plugin, installed=False)
    fuser = registry.create("fusers", "max-pool", {"hidden_dim": 8}, input_dims={"image": 4, "text": 6})
    out = fuser({"image": torch.randn(3, 4), "text": torch.randn(3, 6)})
    assert out.shape == (3, fuser.output_dim) == (3, 8)


def test_missing_modality_is_ignored(make_registry):
    registry = make_registry(polyfuse_maxpool.plugin, installed=False)
    fuser = registry.create("fusers", "max-pool", {}, input_dims={"image": 4, "text": 6})
    image = torch.randn(2, 4)
    only_image = fuser({"image": image})
    masked = fuser({"image": image, "text": torch.randn(2, 6)}, {"text": torch.tensor([False, False])})
    assert torch.equal(only_image, masked)
