"""Tests of the bilinear-pooling fusers (mlb, mfb, mfh, mutan, block) and of ``cross-attention``'s learning.

Built through their registration, like ``tests/test_fusers.py``; the
cross-modal transformer's own checks are in ``test_fuser_cross_attention.py``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
from polyfuse import Kind
from polyfuse.builtins.fusers import MFHConfig, register_fusers
from polyfuse.components import Component, make_component
from polyfuse.contracts import check_fuser
from polyfuse.fusion.bilinear import BilinearFuser, signed_sqrt

torch.set_num_threads(1)


def collect_fusers() -> dict[str, Component]:
    """The built-in fusers, registered through ``register_fusers`` as the registry does."""
    components: dict[str, Component] = {}

    def register(name: Any, factory: Any, *, config: Any, description: Any = "") -> None:
        components[name] = make_component(Kind.FUSER, name, factory, config=config, description=description,
                                          plugin="builtins", distribution="polyfuse")

    register_fusers(register)
    return components


FUSERS = collect_fusers()
LAYOUTS = {2: {"image": 7, "text": 5}, 3: {"image": 7, "text": 5, "audio": 3}}


def random_features(input_dims: dict[str, int], batch: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=generator) for m, d in input_dims.items()}


def gappy_mask(input_dims: dict[str, int], batch: int = 6) -> dict[str, torch.Tensor]:
    """Modality i is missing for sample i only; the last sample has no modality at all."""
    mask = {}
    for i, modality in enumerate(input_dims):
        present = torch.ones(batch, dtype=torch.bool)
        present[[i, -1]] = False
        mask[modality] = present
    return mask

ROOT = Path(__file__).resolve().parents[1]
BILINEAR = ["mlb", "mfb", "mfh", "mutan", "block"]
NEW_FUSERS = [*BILINEAR, "cross-attention"]
DIGITS_VQA_DIMS = {"image": 64, "question": 384}  # small-cnn output_dim 64 + sbert

# Small widths keep the contract checks fast; the defaults are checked separately below.
SMALL = {
    "mlb": {"output_dim": 16, "rank": 8},
    "mfb": {"output_dim": 16, "factors": 3},
    "mfh": {"output_dim": 16, "factors": 3, "blocks": 2},
    "mutan": {"output_dim": 16, "hidden_dim": 8, "core_dim": 8, "rank": 3},
    "block": {"output_dim": 16, "hidden_dim": 16, "chunks": 4, "rank": 2},
    "cross-attention": {"output_dim": 16, "dim": 16, "heads": 2, "layers": 2, "tokens_per_modality": 2, "ff_dim": 16},
}
VARIANTS = [(name, SMALL[name]) for name in NEW_FUSERS] + [
    ("mfb", {"output_dim": 16, "factors": 3, "normalize": False, "dropout": 0.2}),
    ("mfh", {"output_dim": 18, "factors": 2, "blocks": 3}),
    ("block", {"output_dim": 16, "hidden_dim": 16, "chunks": 2, "rank": 3, "normalize": False}),
    ("mlb", {"output_dim": 16, "rank": 8, "dropout": 0.3}),
]


def build(name: str, params: dict[str, Any], dims: dict[str, int], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FUSERS[name].build(params, input_dims=dims)


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_follows_the_fuser_contract(name: str, params: dict[str, Any]) -> None:
    check_fuser(lambda dims: FUSERS[name].build(params, input_dims=dims))
    # More modalities than the papers' two, and unequal widths.
    check_fuser(lambda dims: FUSERS[name].build(params, input_dims=dims),
                modalities={"a": 4, "b": 9, "c": 2, "d": 6})


@pytest.mark.parametrize("name", NEW_FUSERS)
def test_defaults_fit_digits_vqa_features(name: str) -> None:
    fuser = build(name, {}, DIGITS_VQA_DIMS)
    assert fuser.output_dim == 128
    features = random_features(DIGITS_VQA_DIMS)
    out = fuser(features, gappy_mask(DIGITS_VQA_DIMS))
    assert out.shape == (6, 128) and torch.isfinite(out).all()
    assert sum(p.numel() for p in fuser.parameters()) < 1_000_000


@pytest.mark.parametrize("name", NEW_FUSERS)
def test_configs_describe_and_bound_every_field(name: str) -> None:
    config = FUSERS[name].config
    for field, info in config.model_fields.items():
        assert info.description, f"{name}.{field} has no description"
        if info.annotation is int:
            with pytest.raises(pydantic.ValidationError, match=field):
                config.model_validate({field: 0})
        elif info.annotation is float:
            for bad in (-0.1, 1.0):
                with pytest.raises(pydantic.ValidationError, match=field):
                    config.model_validate({field: bad})
    with pytest.raises(pydantic.ValidationError, match="rnak"):
        config.model_validate({"rnak": 8})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mfh", {"output_dim": 10, "blocks": 3}, "output_dim=10 must be a multiple of blocks=3"),
        ("block", {"hidden_dim": 10, "chunks": 4}, "hidden_dim=10 must be a multiple of chunks=4"),
        ("cross-attention", {"dim": 10, "heads": 4}, "dim=10 must be a multiple of heads=4"),
    ],
)
def test_configs_reject_shapes_that_do_not_divide(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        FUSERS[name].config.model_validate(params)


def test_mfh_output_is_one_normalised_block_per_cascade_step() -> None:
    assert MFHConfig().output_dim % MFHConfig().blocks == 0
    fuser = build("mfh", {"output_dim": 24, "factors": 2, "blocks": 3}, LAYOUTS[2])
    out = fuser(random_features(LAYOUTS[2]))
    norms = out.view(out.shape[0], 3, 8).norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    mfb = build("mfb", {"output_dim": 8, "factors": 2}, LAYOUTS[2])
    assert torch.allclose(mfb(random_features(LAYOUTS[2])).norm(dim=1), torch.tensor(1.0))


def test_mfb_is_the_first_block_of_mfh() -> None:
    """Same weights for the first block: MFH's first output block is exactly MFB."""
    mfh = build("mfh", {"output_dim": 16, "factors": 3, "blocks": 2}, LAYOUTS[2])
    mfb = build("mfb", {"output_dim": 8, "factors": 3}, LAYOUTS[2])
    with torch.no_grad():
        for small, big in zip(mfb.projections, mfh.projections):
            small[0].weight.copy_(big[0].weight[:24])
            small[0].bias.copy_(big[0].bias[:24])
    features = random_features(LAYOUTS[2])
    torch.testing.assert_close(mfb(features), mfh(features)[:, :8])


def test_signed_sqrt_has_finite_gradients_at_zero() -> None:
    z = torch.tensor([-4.0, 0.0, 4.0], requires_grad=True)
    out = signed_sqrt(z)
    out.sum().backward()
    assert torch.allclose(out, torch.tensor([-2.0, 0.0, 2.0]), atol=1e-3)
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", BILINEAR)
def test_missing_modality_multiplies_by_its_learned_placeholder(name: str) -> None:
    fuser = build(name, SMALL[name], LAYOUTS[3])
    assert isinstance(fuser, BilinearFuser)
    features = random_features(LAYOUTS[3])
    fuser({m: x for m, x in features.items() if m != "audio"}).sum().backward()
    assert all(p.grad is None for p in fuser.projections[2].parameters())  # absent: never projected
    assert fuser.placeholders[2].grad is not None and fuser.placeholders[2].grad.any()
    assert fuser.placeholders[0].grad is None or not fuser.placeholders[0].grad.any()
    with torch.no_grad():
        fuser.placeholders[2].mul_(2.0)
    out_absent = fuser({m: x for m, x in features.items() if m != "audio"})
    with torch.no_grad():
        fuser.placeholders[2].mul_(0.5)
    assert not torch.allclose(out_absent, fuser({m: x for m, x in features.items() if m != "audio"}))


# --- learning: a multiplicative interaction of two modalities --------------------------------------------
# Two tasks on a, b ~ N(0, I_8): "product" regresses a_0 * b_0, "xor" regresses sign(a_0) * sign(b_0). Both
# have unit variance and no additive part. A fuser (output 16) + linear head trains 300 Adam steps; the
# baseline is concat + Linear(16, 32) + ReLU (593 parameters, about the bilinear fusers' 600-1700). Each
# fuser is checked on the task its output suits: the normalised ones (mfb, mfh, block) lose the magnitude
# the product task needs but fit the sign pattern. Measured: concat 0.066 / 0.40; mlb 0.011, mutan 0.008
# (product); mfb 0.078, mfh 0.13, block 0.063, cross-attention 0.050 (xor). About 0.3 s each.
LEARNING = {
    "mlb": ("product", SMALL["mlb"] | {"rank": 16}),
    "mutan": ("product", {"output_dim": 16, "hidden_dim": 16, "core_dim": 16, "rank": 2}),
    "mfb": ("xor", {"output_dim": 16, "factors": 2}),
    "mfh": ("xor", {"output_dim": 16, "factors": 2, "blocks": 2}),
    "block": ("xor", {"output_dim": 16, "hidden_dim": 16, "chunks": 4, "rank": 2}),
    "cross-attention": ("xor", {"output_dim": 16, "dim": 16, "heads": 2, "layers": 1, "ff_dim": 32}),
}


def interaction_data(task: str, n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 8, generator=generator), torch.randn(n, 8, generator=generator)
    y = a[:, 0] * b[:, 0] if task == "product" else torch.sign(a[:, 0] * b[:, 0])
    return {"a": a, "b": b}, y[:, None]


def held_out_loss(name: str, params: dict[str, Any], task: str, steps: int = 300) -> float:
    train_x, train_y = interaction_data(task, 4096, seed=0)
    test_x, test_y = interaction_data(task, 1024, seed=1)
    fuser = build(name, params, {"a": 8, "b": 8})
    head = torch.nn.Linear(fuser.output_dim, 1)
    optimizer = torch.optim.Adam([*fuser.parameters(), *head.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, 4096, (128,), generator=generator)
        loss = ((head(fuser({m: x[idx] for m, x in train_x.items()})) - train_y[idx]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((head(fuser(test_x)) - test_y) ** 2).mean().item()


@functools.cache
def concat_loss(task: str) -> float:
    return held_out_loss("concat", {"output_dim": 32}, task)


@pytest.mark.parametrize("name", NEW_FUSERS)
def test_learns_a_multiplicative_interaction_faster_than_concat(name: str) -> None:
    task, params = LEARNING[name]
    loss, baseline = held_out_loss(name, params, task), concat_loss(task)
    assert loss < 0.5 * baseline, f"{name} on {task}: held-out MSE {loss:.3f}, concat-MLP {baseline:.3f}"


@pytest.mark.parametrize("name", NEW_FUSERS)
def test_validate_accepts_digits_vqa_with_the_fuser(name: str, tmp_path: Path) -> None:
    example = (ROOT / "examples" / "digits_vqa_dqn.yaml").read_text()
    old = "fuser: {name: gated, params: {hidden_dim: 64}}"
    assert old in example
    config = tmp_path / "pipeline.yaml"
    config.write_text(example.replace(old, f"fuser: {{name: {name}}}"))
    cli = [sys.executable, "-m", "polyfuse.cli", "validate", str(config)]
    result = subprocess.run(cli, check=False, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(example.replace(old, f"fuser: {{name: {name}, params: {{output_dim: 0}}}}"))
    result = subprocess.run([*cli[:-1], str(bad)], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "output_dim" in result.stdout + result.stderr
