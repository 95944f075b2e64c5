"""MulT-style cross-modal transformer over modality tokens."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyfuse.fusion.base import FeatureMaps, Fuser, PresenceMask


class VectorTokens(nn.Module):
    """Turn a ``(B, D)`` feature vector into ``(B, tokens, dim)`` tokens: one linear map, split, plus
    a learned per-token embedding (which also tells the modalities apart).

    Any module mapping a modality's input to ``(B, L, dim)`` tokens can stand
    in for it: a spatial-map tokenizer (``(B, C, H, W) -> (B, H*W, dim)``) is
    the same interface, so :class:`CrossAttentionFuser` needs no other change
    to consume feature maps.
    """

    def __init__(self, input_dim: int, tokens: int, dim: int) -> None:
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.projection = nn.Linear(input_dim, tokens * dim)
        self.embedding = nn.Parameter(0.02 * torch.randn(tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).view(x.shape[0], self.tokens, self.dim) + self.embedding


class MapTokens(nn.Module):
    """Turn a ``(B, C, H, W)`` feature map into ``(B, H*W, dim)`` tokens: a shared linear map of each
    position's channels plus a learned embedding per position."""

    def __init__(self, shape: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        channels, height, width = shape
        self.projection = nn.Linear(channels, dim)
        self.embedding = nn.Parameter(0.02 * torch.randn(height * width, dim))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.projection(fmap.flatten(2).transpose(1, 2)) + self.embedding


class CrossModalLayer(nn.Module):
    """One pre-norm cross-modal block: target tokens attend to source tokens, then a feed-forward MLP.

    Keys marked False in ``keep`` (missing modalities) get no weight. An
    implicit zero key/value (as ``nn.MultiheadAttention(add_zero_attn=True)``)
    lets a token attend to nothing: with every source missing the attention
    adds exactly zero and the block is its residual plus the MLP, with no NaN.
    ``attend=False`` builds the MLP only (a fuser of one modality has no source).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, attend: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.attend = attend
        if attend:
            self.norm_target = nn.LayerNorm(dim)
            self.norm_source = nn.LayerNorm(dim)
            self.query = nn.Linear(dim, dim)
            self.key_value = nn.Linear(dim, 2 * dim)
            self.out = nn.Linear(dim, dim, bias=False)  # so attending to nothing adds exactly zero
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, source: torch.Tensor | None, keep: torch.Tensor | None) -> torch.Tensor:
        if self.attend and source is not None and keep is not None:
            batch, n_query, dim = target.shape
            n_key = source.shape[1]
            q = self.query(self.norm_target(target)).view(batch, n_query, self.heads, self.head_dim).transpose(1, 2)
            kv = self.key_value(self.norm_source(source)).view(batch, n_key, 2, self.heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4)  # each (B, heads, n_key, head_dim)
            scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
            scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
            zero = torch.zeros(*scores.shape[:-1], 1, device=scores.device, dtype=scores.dtype)
            weights = torch.softmax(torch.cat([scores, zero], dim=-1), dim=-1)[..., :-1]
            attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(batch, n_query, dim)
            target = target + self.dropout(self.out(attended))
        return target + self.dropout(self.ff(self.norm_ff(target)))


class CrossAttentionFuser(Fuser):
    """Cross-modal transformer in the style of MulT (Tsai et al. 2019).

    "Multimodal Transformer for Unaligned Multimodal Language Sequences", ACL
    2019. Every modality becomes tokens (a ``(B, D)`` vector is projected and
    split into ``tokens_per_modality`` tokens of width ``dim``). Each modality
    has its own stack of ``layers`` cross-modal blocks whose queries are its
    tokens and whose keys/values are the *input* tokens of all the other
    modalities (as in MulT, every layer attends to the sources' low-level
    tokens); one stack per target modality instead of MulT's one per ordered
    pair keeps the cost linear in the number of modalities. The final tokens
    are layer-normalised, mean-pooled over the modalities present and
    projected to ``output_dim``.

    Feature maps: built with ``map_shapes`` (``{modality: (C, H, W)}``, see
    :mod:`polyfuse.fusion.base`), such a modality's tokens are its vector's
    tokens followed by one token per map position (``H*W``, each a linear map of
    the position's channels plus a learned position embedding), and forward
    takes ``maps=``.

    Missing modalities are masked out: as keys (key-padding mask) and from
    the pool. A sample with one modality still works (its tokens attend to
    nothing and pass through the residual path); a sample with none gets the
    output layer's bias.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        dim: int,
        heads: int,
        layers: int,
        tokens_per_modality: int = 1,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        map_shapes: Mapping[str, tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__(input_dims, output_dim, map_shapes)
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        self.dim, self.heads, self.n_layers = dim, heads, layers
        self.tokens_per_modality = tokens_per_modality
        ff_dim = ff_dim or 2 * dim
        self.tokenizers = nn.ModuleDict(
            {m: VectorTokens(d, tokens_per_modality, dim) for m, d in self.input_dims.items()}
        )
        self.map_tokenizers = nn.ModuleDict({m: MapTokens(shape, dim) for m, shape in self.map_shapes.items()})
        attend = len(self.modalities) > 1
        self.layers = nn.ModuleDict({
            m: nn.ModuleList(CrossModalLayer(dim, heads, ff_dim, dropout, attend) for _ in range(layers))
            for m in self.modalities
        })
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, output_dim)

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        present: PresenceMask | None = None,
        maps: FeatureMaps | None = None,
    ) -> torch.Tensor:
        if self.map_shapes:
            _, _, dtype, mask, inputs, fmaps = self.spatial_inputs(features, present, maps)
        else:
            if maps:
                raise ValueError(f"feature maps of {sorted(maps)} given, but this fuser was built without map_shapes")
            _, _, dtype, mask, inputs = self.masked_inputs(features, present)
            fmaps = {}
        # Missing rows are zeros here, so their tokens are finite; the masks keep them out of every output.
        tokens = {m: self.tokenizers[m](inputs[m]) for m in self.modalities}
        for modality, fmap in fmaps.items():
            tokens[modality] = torch.cat([tokens[modality], self.map_tokenizers[modality](fmap)], dim=1)
        keeps = {m: mask[m][:, None].expand(-1, tokens[m].shape[1]) for m in self.modalities}
        pooled, count = 0.0, 0.0
        for modality in self.modalities:
            others = [m for m in self.modalities if m != modality]
            source = torch.cat([tokens[m] for m in others], dim=1) if others else None
            keep = torch.cat([keeps[m] for m in others], dim=1) if others else None
            x = tokens[modality]
            for layer in self.layers[modality]:
                x = layer(x, source, keep)
            own = keeps[modality]
            pooled = pooled + torch.where(own[:, :, None], self.norm(x), 0.0).sum(dim=1)
            count = count + own.sum(dim=1, keepdim=True).to(dtype)
        return self.output(pooled / count.clamp(min=1.0))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, dim={self.dim}, heads={self.heads}, layers={self.n_layers}, "
                f"tokens_per_modality={self.tokens_per_modality}")
