"""The bilinear-pooling family (MLB, MFB, MFH, MUTAN, BLOCK), generalised to any number of modalities.

The papers fuse exactly two inputs ``x, y`` through a bilinear map
``z_k = x^T W_k y``, i.e. a 3-mode tensor ``W`` that each method factorises
differently. With ``N`` modalities the same map is an ``(N + 1)``-mode tensor
(``z_k = W ×_1 x_1 ×_2 … ×_N x_N``) and every factorisation here extends to it
the way the BLOCK paper describes for n-ary inputs: each modality gets its own
factor matrices and the elementwise (Hadamard) product runs over all ``N``
projected modalities instead of two. For two modalities each fuser is exactly
the paper's model; for one it degrades to a non-linear projection. We chose
this joint product over summing pairwise bilinear terms because it keeps the
parameter count linear in ``N``, models the full N-way interaction, and needs
no special case when only one modality is declared.

Missing modalities: each modality has a learned placeholder in its *projected*
space (the factor that enters the product), initialised to ones. A sample
missing modality ``m`` multiplies by the placeholder instead of ``W_m x_m``, so
at initialisation the product reduces to the other modalities' interaction
(the role the constant ``1`` plays in TFN/LMF), and training can learn what a
gap should contribute. An absent modality's projection is never run (its
gradients stay ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from polyfuse.fusion.base import Fuser, PresenceMask


def signed_sqrt(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Power normalisation ``sign(z) * sqrt(|z|)``, shifted by ``eps`` so its gradient at 0 stays finite."""
    return torch.sign(z) * (torch.sqrt(z.abs() + eps) - eps**0.5)


class BilinearFuser(Fuser):
    """Shared machinery: per-modality projections to ``width`` with learned placeholders for gaps.

    Subclasses call :meth:`factors` and combine the returned ``(B, width)``
    tensors (one per declared modality, in order).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        width: int,
        *,
        activation: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim)
        self.width = width
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, width), activation if activation is not None else nn.Identity())
            for dim in self.input_dims.values()
        )
        self.placeholders = nn.ParameterList(nn.Parameter(torch.ones(width)) for _ in self.modalities)
        # Once on the product, not on each factor: N dropped factors would compound to (1 - p) ** N.
        self.dropout = nn.Dropout(dropout)

    def factors(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None
    ) -> tuple[int, list[torch.Tensor]]:
        """The batch size and each modality's projected ``(B, width)`` factor, placeholders in the gaps."""
        batch, _, _, mask, inputs = self.masked_inputs(features, present)
        out = []
        for modality, projection, placeholder in zip(self.modalities, self.projections, self.placeholders):
            if modality in features:
                z = torch.where(mask[modality][:, None], projection(inputs[modality]), placeholder)
            else:
                z = placeholder.expand(batch, -1)
            out.append(z)
        return batch, out

    def product(self, factors: list[torch.Tensor]) -> torch.Tensor:
        """The elementwise product of ``factors``, then dropout."""
        result = factors[0]
        for factor in factors[1:]:
            result = result * factor
        return self.dropout(result)


class MLBFuser(BilinearFuser):
    """Multimodal Low-rank Bilinear pooling (Kim et al. 2017).

    "Hadamard Product for Low-rank Bilinear Pooling", ICLR 2017:
    ``f = P^T (tanh(U_1^T x_1) ∘ … ∘ tanh(U_N^T x_N)) + b``, a rank-``rank``
    factorisation of the bilinear tensor. Output is ``output_dim`` wide.
    """

    def __init__(self, input_dims: Mapping[str, int], output_dim: int, rank: int, dropout: float = 0.0) -> None:
        super().__init__(input_dims, output_dim, rank, activation=nn.Tanh(), dropout=dropout)
        self.output = nn.Linear(rank, output_dim)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        _, factors = self.factors(features, present)
        return self.output(self.product(factors))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.width}"


class MFHFuser(BilinearFuser):
    """Multi-modal Factorised High-order pooling (Yu et al. 2018); ``blocks=1`` is MFB (Yu et al. 2017).

    MFB ("Multi-modal Factorized Bilinear Pooling with Co-Attention Learning
    for Visual Question Answering", ICCV 2017): every modality is projected to
    ``factors * o``; the Hadamard product is sum-pooled over non-overlapping
    windows of ``factors`` (a rank-``factors`` factorisation of each of the
    ``o`` output slices), then power- (signed sqrt) and L2-normalised.
    MFH ("Beyond Bilinear: Generalized Multimodal Factorized High-order
    Pooling for VQA", TNNLS 2018) cascades ``blocks`` MFB blocks, each block's
    expanded product multiplied into the next one's, and concatenates the
    normalised outputs: ``output_dim = blocks * o``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        factors: int,
        blocks: int = 1,
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        if output_dim % blocks:
            raise ValueError(f"output_dim={output_dim} must be a multiple of blocks={blocks}")
        self.block_dim = output_dim // blocks
        super().__init__(input_dims, output_dim, blocks * factors * self.block_dim, dropout=dropout)
        self.n_factors = factors
        self.blocks = blocks
        self.normalize = normalize

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, factors = self.factors(features, present)
        expanded = self.product(factors).view(batch, self.blocks, self.block_dim * self.n_factors)
        outputs, previous = [], None
        for i in range(self.blocks):
            block = expanded[:, i] if previous is None else expanded[:, i] * previous
            previous = block
            z = block.view(batch, self.block_dim, self.n_factors).sum(dim=2)
            if self.normalize:
                z = F.normalize(signed_sqrt(z), dim=1)
            outputs.append(z)
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factors={self.n_factors}, blocks={self.blocks}, normalize={self.normalize}"


class MutanFuser(BilinearFuser):
    """MUTAN: Multimodal Tucker fusion (Ben-younes et al. 2017).

    "MUTAN: Multimodal Tucker Fusion for Visual Question Answering", ICCV 2017.
    The bilinear tensor is Tucker-decomposed: factor matrices project each
    modality, ``x̃_m = tanh(W_m x_m)`` (``hidden_dim``), and the core tensor is
    constrained to rank ``rank``:
    ``z = sum_r (W^r_1 x̃_1) ∘ … ∘ (W^r_N x̃_N)`` (``core_dim``), then
    ``W_o z`` gives ``output_dim``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dim: int,
        core_dim: int,
        rank: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, output_dim, hidden_dim, activation=nn.Tanh(), dropout=dropout)
        self.core_dim, self.rank = core_dim, rank
        self.merges = nn.ModuleList(nn.Linear(hidden_dim, rank * core_dim) for _ in self.modalities)
        self.output = nn.Linear(core_dim, output_dim)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, factors = self.factors(features, present)
        merged = self.product([merge(z) for merge, z in zip(self.merges, factors)])
        return self.output(merged.view(batch, self.rank, self.core_dim).sum(dim=1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_dim={self.width}, core_dim={self.core_dim}, rank={self.rank}"


class BlockFuser(BilinearFuser):
    """BLOCK: block-superdiagonal tensor fusion (Ben-younes et al. 2019).

    "BLOCK: Bilinear Superdiagonal Fusion for Visual Question Answering and
    Visual Relationship Detection", AAAI 2019. Each modality is projected to
    ``hidden_dim`` and cut into ``chunks`` equal chunks; the fusion tensor is
    block-superdiagonal, so chunk ``c`` of every modality interacts only with
    chunk ``c`` of the others, each block through its own rank-``rank``
    Tucker core. Each chunk's result is power- and L2-normalised (as in the
    authors' code) when ``normalize``; the concatenated chunks go through a
    linear layer to ``output_dim``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        hidden_dim: int,
        chunks: int,
        rank: int,
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        if hidden_dim % chunks:
            raise ValueError(f"hidden_dim={hidden_dim} must be a multiple of chunks={chunks}")
        super().__init__(input_dims, output_dim, hidden_dim, dropout=dropout)
        self.chunks, self.rank, self.normalize = chunks, rank, normalize
        self.chunk_dim = hidden_dim // chunks
        # One (chunk_dim -> rank * chunk_dim) linear map per chunk and modality, stored block-wise.
        bound = self.chunk_dim**-0.5
        self.merge_weights = nn.ParameterList(
            nn.Parameter(torch.empty(chunks, self.chunk_dim, rank * self.chunk_dim).uniform_(-bound, bound))
            for _ in self.modalities
        )
        self.merge_biases = nn.ParameterList(
            nn.Parameter(torch.empty(chunks, rank * self.chunk_dim).uniform_(-bound, bound))
            for _ in self.modalities
        )
        self.output = nn.Linear(hidden_dim, output_dim)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, factors = self.factors(features, present)
        merged = self.product([
            torch.einsum("bci,cio->bco", z.view(batch, self.chunks, self.chunk_dim), weight) + bias
            for z, weight, bias in zip(factors, self.merge_weights, self.merge_biases)
        ])  # (B, chunks, rank * chunk_dim)
        z = merged.view(batch, self.chunks, self.rank, self.chunk_dim).sum(dim=2)
        if self.normalize:
            z = F.normalize(signed_sqrt(z), dim=2)
        return self.output(z.flatten(1))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, hidden_dim={self.width}, chunks={self.chunks}, rank={self.rank}, "
                f"normalize={self.normalize}")


class MFBFuser(MFHFuser):
    """Multi-modal Factorised Bilinear pooling (Yu et al. 2017): :class:`MFHFuser` with one block."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        factors: int,
        dropout: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__(input_dims, output_dim, factors, blocks=1, dropout=dropout, normalize=normalize)
