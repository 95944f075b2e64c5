"""Tests of the built-in fusers, built through their ``register_fusers`` registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

from polyfuse import Kind
from polyfuse.builtins.fusers import register_fusers
from polyfuse.components import Component, make_component
from polyfuse.contracts import check_fuser
from polyfuse.fusion import Fuser

torch.set_num_threads(1)

BATCH = 6
ALL_DIMS = {"image": 7, "text": 5, "audio": 3}
LAYOUTS = {n: dict(list(ALL_DIMS.items())[:n]) for n in (1, 2, 3)}
EXPECTED_NAMES = {"concat", "sum", "mean", "gated", "attention", "late", "tensor", "low-rank"}
# Registered too, and tested in test_fusers_bilinear.py and test_fuser_cross_attention.py.
NEWER_NAMES = {"mlb", "mfb", "mfh", "mutan", "block", "cross-attention"}

# (registry name, params, expected output_dim or None for "sum of the input dims"); small widths keep it fast.
VARIANTS = [
    ("concat", {}, None),
    ("concat", {"output_dim": 16}, 16),
    ("sum", {"hidden_dim": 16}, 16),
    ("mean", {"hidden_dim": 16}, 16),
    ("gated", {"hidden_dim": 16}, 16),
    ("gated", {"hidden_dim": 16, "input_norm": True}, 16),
    ("attention", {"hidden_dim": 16, "attention_dim": 8}, 16),
    ("late", {"output_dim": 16, "hidden_dim": 8}, 16),
    ("late", {"output_dim": 16, "hidden_dim": 8, "combine": "vote"}, 16),
    ("tensor", {"output_dim": 16, "factor_dim": 4}, 16),
    ("low-rank", {"output_dim": 16, "rank": 3}, 16),
]
VARIANT_IDS = [
    "-".join([name, *(f"{k}={v}" for k, v in params.items())]) for name, params, _ in VARIANTS
]


def collect_fusers() -> dict[str, Component]:
    """Run the hook with a collecting ``register``, validating each call like the registry does."""
    components: dict[str, Component] = {}

    def register(name: Any, factory: Any, *, config: Any, description: Any = "") -> None:
        assert name not in components, f"{name!r} registered twice"
        components[name] = make_component(
            Kind.FUSER,
            name,
            factory,
            config=config,
            description=description,
            plugin="builtins",
            distribution="polyfuse",
        )

    register_fusers(register)
    return components


FUSERS = collect_fusers()


def build(name: str, params: dict[str, Any], input_dims: dict[str, int], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FUSERS[name].build(params, input_dims=input_dims)


def random_features(input_dims: dict[str, int], seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(BATCH, d, generator=generator) for m, d in input_dims.items()}


def gappy_mask(input_dims: dict[str, int]) -> dict[str, torch.Tensor]:
    """Modality i is missing for sample i only; the last sample has no modality at all."""
    mask = {}
    for i, modality in enumerate(input_dims):
        present = torch.ones(BATCH, dtype=torch.bool)
        present[i] = False
        present[-1] = False
        mask[modality] = present
    return mask


def test_all_builtin_fusers_are_registered_with_descriptions() -> None:
    assert set(FUSERS) == EXPECTED_NAMES | NEWER_NAMES
    assert EXPECTED_NAMES == {name for name, _, _ in VARIANTS}
    for component in FUSERS.values():
        assert component.description
        assert issubclass(component.config, pydantic.BaseModel)


CONTRACT_CASES = [(name, {}) for name in sorted(EXPECTED_NAMES)] + [(name, p) for name, p, _ in VARIANTS]
CONTRACT_IDS = [f"{name}-defaults" for name in sorted(EXPECTED_NAMES)] + VARIANT_IDS


@pytest.mark.parametrize(("name", "params"), CONTRACT_CASES, ids=CONTRACT_IDS)
def test_follows_the_fuser_contract(name: str, params: dict[str, Any]) -> None:
    check_fuser(lambda dims: FUSERS[name].build(params, input_dims=dims))


@pytest.mark.parametrize(("name", "params", "expected_dim"), VARIANTS, ids=VARIANT_IDS)
def test_output_dim_follows_the_params(name: str, params: dict[str, Any], expected_dim: int | None) -> None:
    dims = LAYOUTS[3]
    expected = sum(dims.values()) if expected_dim is None else expected_dim
    assert build(name, params, dims).output_dim == expected


def test_concat_placeholders_learn_only_from_gaps() -> None:
    fuser = build("concat", {"output_dim": 16}, LAYOUTS[3])
    features = random_features(LAYOUTS[3])
    fuser(features).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in fuser.placeholders)
    fuser(features, gappy_mask(LAYOUTS[3])).sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in fuser.placeholders)


def test_batch_layout_errors_name_the_modality_and_the_fix() -> None:
    fuser = Fuser(LAYOUTS[2], output_dim=1)
    features = random_features(LAYOUTS[2])
    with pytest.raises(ValueError, match=r"'image'.*expected features of shape \(6, 7\), got \(6, 4\)"):
        fuser.batch_layout({**features, "image": torch.randn(BATCH, 4)}, None)
    with pytest.raises(ValueError, match=r"expected features of shape"):
        fuser.batch_layout({**features, "text": torch.randn(BATCH, 5, 1)}, None)
    with pytest.raises(ValueError, match=r"unknown modalities \['depth'\].*built for \['image', 'text'\]"):
        fuser.batch_layout({**features, "depth": torch.randn(BATCH, 3)}, None)
    with pytest.raises(ValueError, match=r"presence mask of 'text' must have shape \(6,\)"):
        fuser.batch_layout(features, {"text": torch.ones(BATCH, 1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no modality given"):
        fuser.batch_layout({}, None)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_configs_reject_bad_values_and_unknown_fields(name: str) -> None:
    config = FUSERS[name].config
    assert all(info.description for info in config.model_fields.values()), f"{name} has an undescribed field"
    int_fields = [f for f, info in config.model_fields.items() if info.annotation in (int, int | None)]
    assert int_fields
    for field in int_fields:
        for bad in (0, -3):
            with pytest.raises(pydantic.ValidationError, match=field):
                config.model_validate({field: bad})
    with pytest.raises(pydantic.ValidationError, match="hiden_dim"):
        config.model_validate({"hiden_dim": 8})


def test_late_config_rejects_unknown_combine() -> None:
    with pytest.raises(pydantic.ValidationError, match="combine"):
        FUSERS["late"].config.model_validate({"combine": "max"})


def test_tensor_fusion_guards_product_size() -> None:
    with pytest.raises(ValueError, match=r"41\^3 = 68921.*max_product_dim=65536.*factor_dim.*'low-rank'"):
        build("tensor", {"factor_dim": 40}, LAYOUTS[3])
    with pytest.raises(ValueError, match="max_product_dim=100"):
        build("tensor", {"factor_dim": 4, "max_product_dim": 100}, LAYOUTS[3])  # 5^3 = 125
    assert build("tensor", {"factor_dim": 4, "max_product_dim": 125}, LAYOUTS[3]).output.in_features == 125


def test_gated_input_norm_keeps_large_features_from_saturating_the_gates() -> None:
    """Features scaled up (as a trained CNN's grow) saturate the plain gates; normalised ones see no change."""
    dims = LAYOUTS[3]
    features, present = random_features(dims), gappy_mask(dims)
    large = {m: 50 * x for m, x in features.items()}
    normed = build("gated", {"hidden_dim": 16, "input_norm": True}, dims, seed=3)
    torch.testing.assert_close(normed(large, present), normed(features, present), atol=1e-4, rtol=1e-4)
    plain = build("gated", {"hidden_dim": 16}, dims, seed=3)
    assert (plain(large, present) - plain(features, present)).abs().max() > 0.1
    assert not normed(large, present)[-1].any()  # no modality at all: still zeros


def test_mean_is_sum_over_present_count() -> None:
    dims = LAYOUTS[3]
    features, present = random_features(dims), gappy_mask(dims)
    total = build("sum", {"hidden_dim": 16}, dims, seed=3)(features, present)
    mean = build("mean", {"hidden_dim": 16}, dims, seed=3)(features, present)
    count = torch.stack(list(present.values()), dim=1).sum(dim=1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(mean * count, total)
    assert not total[-1].any()  # no modality at all: zeros, not NaN


def test_masked_inputs_fill_gaps_in_declared_order() -> None:
    fuser = Fuser(LAYOUTS[3], output_dim=1)
    keep = torch.arange(BATCH) % 2 == 0
    features = {"text": torch.randn(BATCH, 5), "image": torch.full((BATCH, 7), float("nan"))}
    batch, _, _, mask, inputs = fuser.masked_inputs(features, {"image": keep})
    assert batch == BATCH and list(inputs) == list(mask) == ["image", "text", "audio"]
    assert not inputs["image"][~keep].any() and inputs["image"][keep].isnan().all()
    torch.testing.assert_close(inputs["text"], features["text"])
    assert not inputs["audio"].any() and not mask["audio"].any()
    fills = [torch.full((dim,), float(dim)) for dim in LAYOUTS[3].values()]
    *_, filled = fuser.masked_inputs(features, {"image": keep}, fill=fills)
    assert (filled["image"][~keep] == 7).all() and (filled["audio"] == 3).all()


@pytest.mark.parametrize("name", ["sum", "tensor"])
def test_absent_modality_leaves_its_projection_untouched(name: str) -> None:
    """Grads stay None (not zero), so optimisers skip the weights instead of decaying them."""
    fuser = build(name, {}, LAYOUTS[3])
    features = random_features(LAYOUTS[3])
    fuser({m: x for m, x in features.items() if m != "audio"}).sum().backward()
    assert all(p.grad is None for p in fuser.projections[2].parameters())
    assert all(p.grad is not None for p in fuser.projections[0].parameters())


def test_importing_fuser_registration_does_not_import_torch() -> None:
    core = Path(__file__).resolve().parents[1] / "core"
    pythonpath = os.pathsep.join(filter(None, [str(core), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    code = "import polyfuse.builtins.fusers, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
