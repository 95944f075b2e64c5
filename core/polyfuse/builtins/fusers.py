"""The built-in fusers' configs, factories and registration.

Loaded by ``polyfuse --help``, so torch is imported only inside the factories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import accepts_modalities, consumes_maps

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
    input_norm: bool = Field(
        False,
        description="Layer-normalise each modality's features before the candidates and gates: keeps large "
        "features (a trained CNN's) from saturating the gates, which then shut a modality out for good.",
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


class MLBConfig(ComponentConfig):
    """Params of the ``mlb`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output (linear map after the product).")
    rank: int = Field(256, gt=0, description="Width of the tanh projections multiplied elementwise "
                      "(the rank of the bilinear factorisation; 1200 in the paper).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the multimodal product.")


class MFBConfig(ComponentConfig):
    """Params of the ``mfb`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output (after sum pooling).")
    factors: int = Field(5, gt=0, description="k, the number of factors sum-pooled into each output unit.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the multimodal product.")
    normalize: bool = Field(True, description="Power (signed sqrt) and L2 normalisation of the output.")


class MFHConfig(MFBConfig):
    """Params of the ``mfh`` fuser."""

    blocks: int = Field(2, gt=0, description="Number of cascaded MFB blocks; each yields output_dim / blocks.")

    @model_validator(mode="after")
    def _blocks_divide_output(self) -> MFHConfig:
        if self.output_dim % self.blocks:
            raise ValueError(f"output_dim={self.output_dim} must be a multiple of blocks={self.blocks}")
        return self


class MutanConfig(ComponentConfig):
    """Params of the ``mutan`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output.")
    hidden_dim: int = Field(128, gt=0, description="Width of each modality's tanh projection (Tucker factor).")
    core_dim: int = Field(128, gt=0, description="Width of the core tensor's output, before the output layer.")
    rank: int = Field(5, gt=0, description="Rank the Tucker core is constrained to.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the multimodal product.")


class BlockConfig(ComponentConfig):
    """Params of the ``block`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output.")
    hidden_dim: int = Field(128, gt=0, description="Width each modality is projected to, cut into chunks.")
    chunks: int = Field(8, gt=0, description="Number of blocks on the superdiagonal (must divide hidden_dim).")
    rank: int = Field(4, gt=0, description="Rank of each block's Tucker core.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the multimodal product.")
    normalize: bool = Field(True, description="Power and L2 normalisation of each chunk's result.")

    @model_validator(mode="after")
    def _chunks_divide_hidden(self) -> BlockConfig:
        if self.hidden_dim % self.chunks:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be a multiple of chunks={self.chunks}")
        return self


class CrossAttentionConfig(ComponentConfig):
    """Params of the ``cross-attention`` fuser."""

    output_dim: int = Field(128, gt=0, description="Width of the fused output.")
    dim: int = Field(64, gt=0, description="Width of the tokens (model dimension).")
    heads: int = Field(4, gt=0, description="Attention heads (must divide dim).")
    layers: int = Field(2, gt=0, description="Cross-modal blocks per modality.")
    tokens_per_modality: int = Field(
        1, gt=0, description="Tokens each modality's feature vector is projected and split into.")
    ff_dim: int = Field(128, gt=0, description="Hidden width of each block's feed-forward MLP.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on attention weights and residual branches.")
    feature_maps: bool = Field(
        False, description="Also attend over the spatial feature map of every modality whose encoder offers one "
        "(small-cnn; timm with feature_map): one token per map position, beside its vector's tokens.")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> CrossAttentionConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be a multiple of heads={self.heads}")
        return self


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

    return GatedFuser(input_dims, hidden_dim=config.hidden_dim, input_norm=config.input_norm)


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


def build_mlb(config: MLBConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.bilinear import MLBFuser

    return MLBFuser(input_dims, output_dim=config.output_dim, rank=config.rank, dropout=config.dropout)


def build_mfb(config: MFBConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.bilinear import MFBFuser

    return MFBFuser(input_dims, output_dim=config.output_dim, factors=config.factors,
                    dropout=config.dropout, normalize=config.normalize)


def build_mfh(config: MFHConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.bilinear import MFHFuser

    return MFHFuser(input_dims, output_dim=config.output_dim, factors=config.factors, blocks=config.blocks,
                    dropout=config.dropout, normalize=config.normalize)


def build_mutan(config: MutanConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.bilinear import MutanFuser

    return MutanFuser(input_dims, output_dim=config.output_dim, hidden_dim=config.hidden_dim,
                      core_dim=config.core_dim, rank=config.rank, dropout=config.dropout)


def build_block(config: BlockConfig, input_dims: Mapping[str, int]) -> Fuser:
    from polyfuse.fusion.bilinear import BlockFuser

    return BlockFuser(input_dims, output_dim=config.output_dim, hidden_dim=config.hidden_dim,
                      chunks=config.chunks, rank=config.rank, dropout=config.dropout, normalize=config.normalize)


def _maps_offered(config: CrossAttentionConfig, offers: Mapping[str, bool | None]) -> list[str] | None:
    """Every modality whose encoder offers a map, with ``feature_maps``; without it, none (vectors only)."""
    return [modality for modality, offered in offers.items() if offered] if config.feature_maps else None


@consumes_maps(_maps_offered)
def build_cross_attention(config: CrossAttentionConfig, input_dims: Mapping[str, int],
                          map_shapes: Mapping[str, tuple[int, int, int]] | None = None) -> Fuser:
    from polyfuse.fusion.cross_attention import CrossAttentionFuser

    return CrossAttentionFuser(input_dims, output_dim=config.output_dim, dim=config.dim, heads=config.heads,
                               layers=config.layers, tokens_per_modality=config.tokens_per_modality,
                               ff_dim=config.ff_dim, dropout=config.dropout, map_shapes=map_shapes)


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
    register("mlb", build_mlb, config=MLBConfig,
             description="Multimodal Low-rank Bilinear pooling, Hadamard product of tanh projections "
             "(Kim et al. 2017)")
    register("mfb", build_mfb, config=MFBConfig,
             description="Multi-modal Factorized Bilinear pooling with power and L2 normalisation (Yu et al. 2017)")
    register("mfh", build_mfh, config=MFHConfig,
             description="Multi-modal Factorized High-order pooling, cascaded MFB blocks (Yu et al. 2018)")
    register("mutan", build_mutan, config=MutanConfig,
             description="MUTAN Tucker fusion with a low-rank core (Ben-younes et al. 2017)")
    register("block", build_block, config=BlockConfig,
             description="BLOCK block-superdiagonal tensor fusion (Ben-younes et al. 2019)")
    register("cross-attention", build_cross_attention, config=CrossAttentionConfig,
             description="MulT-style cross-modal transformer over modality tokens (Tsai et al. 2019)")
