"""``mmcnn``: fusion inside a CNN. One modality's spatial feature map is conditioned on every other modality.

The image modality's map ``(B, C, H, W)`` (from its encoder's ``forward_spatial``;
optionally with two coordinate channels) runs through ``depth`` blocks of
3x3 conv, conditioning and ReLU (residual after the first block), then max or
mean pooling: global, or to a ``pool_size`` x ``pool_size`` grid that keeps
where things are (a navigating agent needs "the red ball is to my left", which
a global pool can only infer from border effects). Each other ("conditioning")
modality is embedded (Linear+ReLU, ``conditioning_dim``) and conditions the blocks:

- ``film``: each conditioning modality predicts, for every block, a per-channel
  ``delta_gamma`` and ``beta`` (Perez et al. 2018, as in the BabyAI baselines);
  the block computes ``(1 + sum delta_gamma) * h + sum beta``. A modality
  missing for a sample contributes nothing: with all of them missing the
  modulation is the identity (gamma = 1, beta = 0).
- ``tile``: the embeddings are tiled over the grid and concatenated to the
  map's channels before the first block; a missing modality's channels are zeros.

The fused vector is ``ReLU(Linear([pooled map, embeddings]))`` of ``output_dim``:
the conditioning embeddings reach the output directly too, so a sample without
its image still carries the other modalities. A sample missing the image
modality gets a learned placeholder instead of the pooled map (its map rows are
never read, even NaN ones). The image modality's pooled vector is not used:
the map holds everything it was pooled from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from polyfuse.fusion import FeatureMaps, Fuser, PresenceMask
from torch import nn

if TYPE_CHECKING:
    from polyfuse_mmcnn.plugin import MMCNNConfig


class MMCNNFuser(Fuser):
    """Conv blocks over ``image``'s feature map, FiLM-modulated by (or tiled with) the other modalities."""

    def __init__(
        self,
        input_dims: Mapping[str, int],
        map_shapes: Mapping[str, Any],
        image: str | None = None,
        *,
        conditioning: str = "film",
        depth: int = 2,
        width: int = 64,
        conditioning_dim: int = 64,
        coordinates: bool = True,
        pooling: str = "max",
        pool_size: int = 1,
        output_dim: int = 128,
    ) -> None:
        if image is None:
            if len(map_shapes) != 1:
                raise ValueError(
                    f"mmcnn fuses one feature map, but maps of {list(map_shapes)} were given: name the image modality"
                )
            image = next(iter(map_shapes))
        if image not in map_shapes:
            raise ValueError(f"mmcnn fuses the feature map of {image!r}, but only maps of {list(map_shapes)} are given")
        if conditioning not in ("film", "tile") or pooling not in ("max", "mean"):
            raise ValueError(f"conditioning is 'film' or 'tile' ({conditioning!r}), pooling 'max' or 'mean' ({pooling!r})")
        super().__init__(input_dims, output_dim, map_shapes={image: map_shapes[image]})
        self.image = image
        self.conditioning = conditioning
        self.pooling = pooling
        self.depth, self.width = int(depth), int(width)
        self.conditioners = tuple(m for m in self.modalities if m != image)
        channels, height, width_ = self.map_shapes[image]
        self.pool_size = (min(int(pool_size), height), min(int(pool_size), width_))
        self.embed = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(self.input_dims[m], conditioning_dim), nn.ReLU()) for m in self.conditioners}
        )
        if coordinates:
            ys = torch.linspace(-1, 1, height).view(height, 1).expand(height, width_)
            xs = torch.linspace(-1, 1, width_).view(1, width_).expand(height, width_)
            self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)
        else:
            self.coords = None
        in_channels = channels + (2 if coordinates else 0)
        if conditioning == "tile":
            in_channels += conditioning_dim * len(self.conditioners)
        self.blocks = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else self.width, self.width, 3, padding=1) for i in range(self.depth)
        )
        self.film = nn.ModuleDict(
            {m: nn.Linear(conditioning_dim, 2 * self.depth * self.width) for m in self.conditioners}
            if conditioning == "film"
            else {}
        )
        pooled_dim = self.width * self.pool_size[0] * self.pool_size[1]
        self.missing_image = nn.Parameter(torch.zeros(pooled_dim))
        self.head = nn.Sequential(
            nn.Linear(pooled_dim + conditioning_dim * len(self.conditioners), self.output_dim), nn.ReLU()
        )

    @classmethod
    def from_config(
        cls, config: MMCNNConfig, input_dims: Mapping[str, int], map_shapes: Mapping[str, Any]
    ) -> MMCNNFuser:
        return cls(
            input_dims,
            map_shapes,
            config.image,
            conditioning=config.conditioning,
            depth=config.depth,
            width=config.width,
            conditioning_dim=config.conditioning_dim,
            coordinates=config.coordinates,
            pooling=config.pooling,
            pool_size=config.pool_size,
            output_dim=config.output_dim,
        )

    def film_parameters(
        self, embeddings: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma, beta`` of shape ``(B, depth, width)``: 1 and 0 plus each present modality's share."""
        gamma = torch.ones(batch, self.depth, self.width, device=self.missing_image.device)
        beta = torch.zeros_like(gamma)
        for modality in self.conditioners:
            delta = self.film[modality](embeddings[modality]).view(batch, 2, self.depth, self.width)
            delta = torch.where(mask[modality][:, None, None, None], delta, 0.0)
            gamma = gamma + delta[:, 0]
            beta = beta + delta[:, 1]
        return gamma, beta

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        present: PresenceMask | None = None,
        maps: FeatureMaps | None = None,
    ) -> torch.Tensor:
        batch, _, _, mask, inputs, map_inputs = self.spatial_inputs(features, present, maps)
        embeddings = {
            m: torch.where(mask[m][:, None], self.embed[m](inputs[m]), 0.0) for m in self.conditioners
        }
        x = map_inputs[self.image]
        height, width = x.shape[2:]
        parts = [x]
        if self.coords is not None:
            parts.append(self.coords.to(x.dtype).expand(batch, -1, -1, -1))
        if self.conditioning == "tile":
            parts += [e[:, :, None, None].expand(-1, -1, height, width) for e in embeddings.values()]
        h = torch.cat(parts, dim=1) if len(parts) > 1 else x
        if self.conditioning == "film":
            gamma, beta = self.film_parameters(embeddings, mask, batch)
        for i, conv in enumerate(self.blocks):
            out = conv(h)
            if self.conditioning == "film":
                out = gamma[:, i, :, None, None] * out + beta[:, i, :, None, None]
            out = torch.relu(out)
            h = out if i == 0 else h + out
        pooled = self._pool(h)
        pooled = torch.where(mask[self.image][:, None], pooled, self.missing_image)
        return self.head(torch.cat([pooled, *embeddings.values()], dim=1))

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, width * pool cells)``; a global pool as a plain reduction, the cheaper op for the same values."""
        if self.pool_size == (1, 1):
            return h.amax(dim=(2, 3)) if self.pooling == "max" else h.mean(dim=(2, 3))
        pool = nn.functional.adaptive_max_pool2d if self.pooling == "max" else nn.functional.adaptive_avg_pool2d
        return pool(h, self.pool_size).flatten(1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, image={self.image!r}, conditioning={self.conditioning!r}, "
            f"depth={self.depth}, width={self.width}, pooling={self.pooling!r}, "
            f"pool_size={self.pool_size}"
        )
