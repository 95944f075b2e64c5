"""The built-in fusers' configs, factories and registration.

Loaded by ``polyfuse --help``, so torch is imported only inside the factories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import accepts_modalities

if TYPE_CHECKING:
    from polyfuse.fusion import Fuser


class ConcatConfig(ComponentConfig):
    """Params of the ``concat`` fuser."""

    output_dim: int | None = Field(
        None,
        gt=0,
        description="Width of a Linear+ReLU projection after concatenation; "
        "null keeps the raw concatenation (sum of the modality dims).",
    )


class PoolingConfig(ComponentConfig):
    """Params of the ``sum`` and ``mean`` fusers."""

    hidden_dim: int = Field(
        128, gt=0, description="Width each modality is projected to before pooling (= output width)."
    )


class GatedConfig(ComponentConfig):
    """Params of the ``gated`` fuser."""

    hidden_dim: int = Field(
        128, gt=0, description="Width of the per-modality candidates and of the gated output."
    )


class AttentionConfig(ComponentConfig):
    """Params of the ``attention`` fuser."""

    hidden_dim: int = Field(128, gt=0, description="Width each modality is projected to (= output width).")
    attention_dim: int = Field(64, gt=0, description="Hidden width of the MLP that scores each modality.")


class LateConfig(ComponentConfig):
    """Params of the ``late`` fuser."""

    output_dim: int = Field(64, gt=0, description="Width of each modality head's output (= output width).")
    hidden_dim: int = Field(128, gt=0, description="Hidden width of each modality head's MLP.")
    combine: Literal["weighted", "vote"] = Field(
        "weighted",
        description="'weighted': learned per-modality weights (softmax over present modalities); "
        "'vote': mean of the present modalities' outputs.",
    )


class TensorConfig(ComponentConfig):
    """Params of the ``tensor`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the linear layer after the outer product.")
    factor_dim: int = Field(
        8,
        gt=0,
        description="Width each modality is projected to before the outer product (plus a constant 1).",
    )
    max_product_dim: int = Field(
        65536,
        gt=0,
        description="Upper bound on the outer product's size, (factor_dim + 1) ** n_modalities.",
    )


class LowRankConfig(ComponentConfig):
    """Params of the ``low-rank`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output.")
    rank: int = Field(4, gt=0, description="Number of rank-one terms the fusion tensor is factorised into.")


def build_concat(config: ConcatConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.concat import ConcatFuser

    return ConcatFuser(input_dims, output_dim=config.output_dim)


def build_sum(config: PoolingConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.pooling import PoolingFuser

    return PoolingFuser(input_dims, hidden_dim=config.hidden_dim, mode="sum")


def build_mean(config: PoolingConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.pooling import PoolingFuser

    return PoolingFuser(input_dims, hidden_dim=config.hidden_dim, mode="mean")


def build_gated(config: GatedConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.gated import GatedFuser

    return GatedFuser(input_dims, hidden_dim=config.hidden_dim)


def build_attention(config: AttentionConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.attention import AttentionFuser

    return AttentionFuser(input_dims, hidden_dim=config.hidden_dim, attention_dim=config.attention_dim)


def build_late(config: LateConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.late import LateFuser

    return LateFuser(
        input_dims, output_dim=config.output_dim, hidden_dim=config.hidden_dim, combine=config.combine
    )


def _tensor_product_fits(config: TensorConfig, modalities: Sequence[str]) -> str | None:
    """The outer product's size, checked by `polyfuse validate` (TensorFuser raises the same when built)."""
    product_dim = (config.factor_dim + 1) ** len(modalities)
    if product_dim <= config.max_product_dim:
        return None
    return (f"tensor fusion of {len(modalities)} modalities with factor_dim={config.factor_dim} needs a "
            f"{config.factor_dim + 1}^{len(modalities)} = {product_dim}-dim outer product, above "
            f"max_product_dim={config.max_product_dim}; lower factor_dim, use the 'low-rank' fuser "
            "(linear in the number of modalities), or raise max_product_dim if memory allows")


@accepts_modalities(_tensor_product_fits)
def build_tensor(config: TensorConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.tensor import TensorFuser

    return TensorFuser(
        input_dims,
        output_dim=config.output_dim,
        factor_dim=config.factor_dim,
        max_product_dim=config.max_product_dim,
    )


def build_low_rank(config: LowRankConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.low_rank import LowRankFuser

    return LowRankFuser(input_dims, output_dim=config.output_dim, rank=config.rank)


@hookimpl
def register_fusers(register: Callable[..., Any]) -> None:
    register("concat", build_concat, config=ConcatConfig,
             description="Concatenate features; learned placeholders fill missing modalities")
    register("sum", build_sum, config=PoolingConfig,
             description="Sum of per-modality linear projections")
    register("mean", build_mean, config=PoolingConfig,
             description="Mean of per-modality linear projections over the modalities present")
    register("gated", build_gated, config=GatedConfig,
             description="Gated Multimodal Unit (Arevalo et al. 2017)")
    register("attention", build_attention, config=AttentionConfig,
             description="Softmax attention over projected modalities (Hori et al. 2017)")
    register("late", build_late, config=LateConfig,
             description="Late fusion: one head per modality, weighted or voted")
    register("tensor", build_tensor, config=TensorConfig,
             description="Tensor Fusion Network outer product (Zadeh et al. 2017)")
    register("low-rank", build_low_rank, config=LowRankConfig,
             description="Low-rank Multimodal Fusion (Liu et al. 2018)")
