"""The mmcnn fuser: the spatial fuser contract, FiLM identity on missing modalities, a missing image, learning."""

from __future__ import annotations

import pytest
import torch
from polyfuse.testing import check_fuser, check_spatial_fuser
from polyfuse_mmcnn import plugin
from polyfuse_mmcnn.fuser import MMCNNFuser

SMALL = {"depth": 2, "width": 8, "conditioning_dim": 6, "output_dim": 10}


@pytest.mark.parametrize(
    "params",
    [
        {"conditioning": "film"},
        {"conditioning": "tile"},
        {"conditioning": "film", "pooling": "mean", "coordinates": False, "depth": 1},
        {"conditioning": "tile", "image": "image", "depth": 3},
        {"conditioning": "film", "pool_size": 2},
        {"conditioning": "tile", "pooling": "mean", "pool_size": 3},
    ],
    ids=["film", "tile", "film-mean-nocoords", "tile-named-image", "film-pool2", "tile-mean-pool3"],
)
def test_mmcnn_passes_the_spatial_fuser_contract(make_registry, params) -> None:
    registry = make_registry(plugin, installed=False)
    check_spatial_fuser(
        lambda dims, maps: registry.create("fusers", "mmcnn", {**SMALL, **params}, input_dims=dims, map_shapes=maps)
    )


def test_the_image_map_can_come_from_any_modality() -> None:
    check_spatial_fuser(
        lambda dims, maps: MMCNNFuser(dims, maps, **SMALL),
        maps={"grid": (3, 7, 7)},
        modalities={"mission": 12, "grid": 5, "heading": 4, "extra": 2},
    )


def test_a_vector_only_contract_check_is_refused_with_a_reason() -> None:
    """mmcnn needs a map: built without one, it says so instead of failing somewhere inside."""
    with pytest.raises(ValueError, match="one feature map"):
        check_fuser(lambda dims: MMCNNFuser(dims, {}, **SMALL))


def _fuser(**params) -> MMCNNFuser:
    torch.manual_seed(0)
    return MMCNNFuser({"image": 4, "text": 5, "heading": 3}, {"image": (2, 5, 5)}, **{**SMALL, **params}).eval()


def _inputs(batch: int = 6):
    generator = torch.Generator().manual_seed(1)
    features = {"image": torch.randn(batch, 4, generator=generator), "text": torch.randn(batch, 5, generator=generator),
                "heading": torch.randn(batch, 3, generator=generator)}
    return features, {"image": torch.randn(batch, 2, 5, 5, generator=generator)}


def test_film_is_the_identity_for_missing_conditioning_modalities() -> None:
    fuser = _fuser()
    features, _ = _inputs()
    batch = 6
    embeddings = {m: fuser.embed[m](features[m]) for m in fuser.conditioners}
    nobody = {m: torch.zeros(batch, dtype=torch.bool) for m in fuser.conditioners}
    gamma, beta = fuser.film_parameters(embeddings, nobody, batch)
    assert torch.equal(gamma, torch.ones_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))
    # One missing modality contributes nothing: the modulation is the other modality's alone.
    text_only = {"text": torch.ones(batch, dtype=torch.bool), "heading": torch.zeros(batch, dtype=torch.bool)}
    gamma, beta = fuser.film_parameters(embeddings, text_only, batch)
    delta = fuser.film["text"](embeddings["text"]).view(batch, 2, fuser.depth, fuser.width)
    assert torch.allclose(gamma, 1 + delta[:, 0]) and torch.allclose(beta, delta[:, 1])


def test_without_conditioning_the_conv_trunk_runs_unmodulated() -> None:
    """All conditioning missing = the same trunk with FiLM switched off: compare with the blocks by hand."""
    fuser = _fuser()
    features, maps = _inputs()
    absent = fuser({"image": features["image"]}, maps=maps)
    h = torch.cat([maps["image"], fuser.coords.expand(6, -1, -1, -1)], dim=1)
    for i, conv in enumerate(fuser.blocks):
        out = torch.relu(conv(h))
        h = out if i == 0 else h + out
    pooled = h.amax(dim=(2, 3))
    zeros = torch.zeros(6, 2 * fuser.embed["text"][0].out_features)
    assert torch.allclose(absent, fuser.head(torch.cat([pooled, zeros], dim=1)), atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooling_to_a_grid_keeps_where_a_feature_is_and_global_pooling_does_not(pooling: str) -> None:
    """One active cell, left or right: a global pool cannot tell them apart, a 2x2 pool can."""
    features, _ = _inputs(batch=2)
    features = {m: f[:1].expand(2, -1) for m, f in features.items()}
    impulse = torch.zeros(2, 2, 8, 8)
    impulse[0, :, 2, 2] = 1.0  # the left half
    impulse[1, :, 2, 5] = 1.0  # the same pattern moved right; both away from the borders
    maps = {"image": impulse}

    def fused(pool_size: int) -> torch.Tensor:
        torch.manual_seed(0)
        fuser = MMCNNFuser({"image": 4, "text": 5, "heading": 3}, {"image": (2, 8, 8)}, **{**SMALL, "depth": 1},
                           coordinates=False, pooling=pooling, pool_size=pool_size).eval()
        with torch.no_grad():
            return fuser(features, maps=maps)

    global_pool, grid_pool = fused(1), fused(2)
    assert torch.allclose(global_pool[0], global_pool[1], atol=1e-6)
    assert not torch.allclose(grid_pool[0], grid_pool[1], atol=1e-3)


def test_a_missing_image_uses_the_learned_placeholder_and_keeps_the_other_modalities() -> None:
    fuser = _fuser()
    features, maps = _inputs()
    with torch.no_grad():
        fuser.missing_image.copy_(torch.arange(fuser.width, dtype=torch.float32))
    no_image = {"image": torch.zeros(6, dtype=torch.bool)}
    out = fuser(features, no_image, maps=maps)
    garbage = {"image": torch.full_like(maps["image"], float("nan"))}
    assert torch.equal(out, fuser(features, no_image, maps=garbage))  # the map is never read
    changed = {**features, "text": features["text"] + 1}
    assert not torch.allclose(out, fuser(changed, no_image, maps=maps))  # the mission still counts


def test_maps_are_checked_against_the_declared_shape() -> None:
    fuser = _fuser()
    features, maps = _inputs()
    with pytest.raises(ValueError, match=r"expected a feature map of shape \(6, 2, 5, 5\)"):
        fuser(features, maps={"image": maps["image"].transpose(2, 3)[:, :, :4]})
    with pytest.raises(ValueError, match="no feature map"):
        fuser(features)


# -- learning: conditioning must steer the spatial features ------------------------------------------------


def quadrant_task(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """6x6 maps with each quadrant lit (1) or dark at random; a one-hot asks about one quadrant: is it lit?"""
    lit = torch.rand(samples, 4, generator=generator) < 0.5
    maps = torch.zeros(samples, 1, 6, 6)
    for q, (rows, cols) in enumerate([(slice(0, 3), slice(0, 3)), (slice(0, 3), slice(3, 6)),
                                      (slice(3, 6), slice(0, 3)), (slice(3, 6), slice(3, 6))]):
        maps[:, 0, rows, cols] = lit[:, q, None, None].float()
    asked = torch.randint(0, 4, (samples,), generator=generator)
    return maps, torch.nn.functional.one_hot(asked, 4).float(), lit[torch.arange(samples), asked].float()


class PooledConcat(torch.nn.Module):
    """The usual late alternative: the map's pooled vector concatenated with the one-hot, then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(1 + 4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU())

    def forward(self, maps: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([maps.mean(dim=(2, 3)), query], dim=1))


def train_and_score(model: torch.nn.Module, forward, steps: int = 250) -> float:
    generator = torch.Generator().manual_seed(0)
    train, test = quadrant_task(512, generator), quadrant_task(512, generator)
    head = torch.nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(forward(*train[:2]))[:, 0], train[2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = head(forward(*test[:2]))[:, 0] > 0
    return float((predicted == test[2].bool()).float().mean())


def test_film_learns_where_to_look_and_pooled_concatenation_cannot() -> None:
    torch.manual_seed(0)
    film = MMCNNFuser({"map": 1, "query": 4}, {"map": (1, 6, 6)}, depth=2, width=16, conditioning_dim=16, output_dim=16)
    film_accuracy = train_and_score(film, lambda maps, query: film({"map": maps.mean(dim=(2, 3)), "query": query},
                                                                  maps={"map": maps}))
    torch.manual_seed(0)
    concat = PooledConcat()
    concat_accuracy = train_and_score(concat, concat)
    assert film_accuracy > 0.95, film_accuracy
    assert concat_accuracy < 0.8, concat_accuracy
