import torch

import polyfuse_maxpool.plugin
from polyfuse.testing import check_fuser
from polyfuse_maxpool.fuser import MaxPoolFuser


def test_max_pool_through_the_registry(make_registry):
    registry = make_registry(polyfuse_maxpool.plugin, installed=False)
    fuser = registry.create("fusers", "max-pool", {"hidden_dim": 8}, input_dims={"image": 4, "text": 6})
    out = fuser({"image": torch.randn(3, 4), "text": torch.randn(3, 6)})
    assert out.shape == (3, fuser.output_dim) == (3, 8)


def test_max_pool_follows_the_fuser_contract():
    check_fuser(lambda dims: MaxPoolFuser(dims, hidden_dim=8))
