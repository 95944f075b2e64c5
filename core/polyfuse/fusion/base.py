"""The contract every fuser follows, built-in or third-party.

A fuser maps ``{modality: (B, D_m) features}`` to one ``(B, output_dim)`` tensor.
Modalities may be missing: a whole key absent from ``features`` means the
modality is missing for every sample; ``present[m]`` (a ``(B,)`` bool tensor,
True where the sample has modality ``m``) marks per-sample gaps. Fusers decide
how to fill a gap (a learned placeholder, masking attention, the constant
term of a tensor product…), so that no caller has to zero-fill by hand.

Spatial fusers also read feature maps. An encoder may offer one besides its
pooled vector: ``forward_spatial(batch) -> (pooled (B, D), map (B, C, H, W))``
with the map's ``(C, H, W)`` in its ``feature_map_shape`` (``None`` when it has
none); the core's ``small-cnn`` and ``timm`` with ``params.feature_map`` do. A
fuser that consumes maps is built with ``map_shapes`` (``{modality: (C, H, W)}``,
the modalities whose maps it reads) and stores it in ``self.map_shapes``; the
network then calls ``forward(features, present, maps=...)`` with one
``(B, C, H, W)`` map for each of those modalities that is present. A map follows
its modality: it is given exactly when the modality's features are, and
``present[m]`` marks its missing rows too. :meth:`Fuser.spatial_inputs`
validates them and selects missing rows away. Fusers with an empty
``map_shapes`` (all the vector fusers) are called as ``forward(features, present)``.
The fuser's factory declares which modalities' maps it wants with
:func:`polyfuse.declarations.consumes_maps`, so ``polyfuse validate`` can check
that their encoders give maps without building anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

PresenceMask = Mapping[str, torch.Tensor]
FeatureMaps = Mapping[str, torch.Tensor]
MapShape = tuple[int, int, int]


class Fuser(nn.Module):
    """Base class for fusers: stores the modality layout and validates inputs.

    ``map_shapes`` (spatial fusers only) maps each modality whose feature map the
    fuser consumes to the map's ``(C, H, W)``; each must also be in ``input_dims``.
    """

    map_shapes: dict[str, MapShape]

    def __init__(
        self,
        input_dims: Mapping[str, int],
        output_dim: int,
        map_shapes: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("a fuser needs at least one modality")
        for modality, dim in input_dims.items():
            if int(dim) <= 0:
                raise ValueError(f"modality {modality!r} has feature dim {dim}; it must be positive")
        self.input_dims: dict[str, int] = {m: int(d) for m, d in input_dims.items()}
        self.modalities: tuple[str, ...] = tuple(self.input_dims)
        self.output_dim = int(output_dim)
        self.map_shapes = {}
        for modality, shape in (map_shapes or {}).items():
            if modality not in self.input_dims:
                raise ValueError(
                    f"map_shapes names {modality!r}, which is not among the fused modalities {list(self.modalities)}"
                )
            dims = tuple(int(d) for d in shape)
            if len(dims) != 3 or min(dims) <= 0:
                raise ValueError(f"modality {modality!r}: a feature map's shape is (C, H, W) > 0, got {tuple(shape)}")
            self.map_shapes[modality] = dims  # type: ignore[assignment]

    @property
    def consumes_maps(self) -> tuple[str, ...]:
        """The modalities whose spatial feature maps this fuser reads (empty for a vector fuser)."""
        return tuple(self.map_shapes)

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def spatial_inputs(
        self,
        features: Mapping[str, torch.Tensor],
        present: PresenceMask | None,
        maps: FeatureMaps | None,
        fill: Iterable[torch.Tensor] | None = None,
    ) -> tuple[
        int, torch.device, torch.dtype, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]
    ]:
        """``masked_inputs``' tuple plus every consumed modality's ``(B, C, H, W)`` map, gaps as zeros.

        A map must be given exactly when its modality's features are (the
        network passes both); its missing rows (``present``) are selected away
        like the vectors', so NaN in them reaches neither output nor gradients.
        """
        batch, device, dtype, mask, inputs = self.masked_inputs(features, present, fill)
        maps = dict(maps or {})
        unknown = set(maps) - set(self.map_shapes)
        if unknown:
            raise ValueError(
                f"feature maps of {sorted(unknown)} given, but this fuser consumes the maps of "
                f"{list(self.map_shapes) or 'no modality'}"
            )
        resolved: dict[str, torch.Tensor] = {}
        for modality, shape in self.map_shapes.items():
            fmap = maps.get(modality)
            if (fmap is None) != (modality not in features):
                has, lacks = ("features", "feature map") if fmap is None else ("feature map", "features")
                raise ValueError(
                    f"modality {modality!r} has a {has} but no {lacks}: a spatial fuser takes both or neither "
                    "(MultimodalNetwork passes the encoder's forward_spatial output)"
                )
            if fmap is None:
                resolved[modality] = torch.zeros(batch, *shape, device=device, dtype=dtype)
                continue
            if fmap.dim() != 4 or tuple(fmap.shape) != (batch, *shape):
                raise ValueError(
                    f"modality {modality!r}: expected a feature map of shape ({batch}, {', '.join(map(str, shape))}) "
                    f"(B, C, H, W), got {tuple(fmap.shape)}"
                )
            if present is None or present.get(modality) is None:
                resolved[modality] = fmap
            else:
                resolved[modality] = torch.where(mask[modality][:, None, None, None], fmap, 0.0)
        return batch, device, dtype, mask, inputs, resolved

    def batch_layout(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None
    ) -> tuple[int, torch.device, torch.dtype, dict[str, torch.Tensor]]:
        """Check ``features`` against the declared modalities and resolve presence.

        Returns the batch size, device, dtype and a ``(B,)`` bool presence tensor
        for every declared modality (all False for a modality absent from
        ``features``).
        """
        unknown = set(features) - set(self.modalities)
        if unknown:
            raise ValueError(
                f"unknown modalities {sorted(unknown)}; this fuser was built for {list(self.modalities)}"
            )
        if not features:
            raise ValueError("no modality given: at least one feature tensor is needed")
        reference = next(iter(features.values()))
        batch, device, dtype = reference.shape[0], reference.device, reference.dtype
        resolved: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            tensor = features.get(modality)
            if tensor is None:
                resolved[modality] = torch.zeros(batch, dtype=torch.bool, device=device)
                continue
            expected = self.input_dims[modality]
            if tensor.dim() != 2 or tensor.shape[0] != batch or tensor.shape[1] != expected:
                raise ValueError(
                    f"modality {modality!r}: expected features of shape ({batch}, {expected}), "
                    f"got {tuple(tensor.shape)}"
                )
            mask = None if present is None else present.get(modality)
            if mask is None:
                resolved[modality] = torch.ones(batch, dtype=torch.bool, device=device)
            else:
                if mask.shape != (batch,):
                    raise ValueError(
                        f"presence mask of {modality!r} must have shape ({batch},), got {tuple(mask.shape)}"
                    )
                resolved[modality] = mask.to(device=device, dtype=torch.bool)
        return batch, device, dtype, resolved

    def masked_inputs(
        self,
        features: Mapping[str, torch.Tensor],
        present: PresenceMask | None,
        fill: Iterable[torch.Tensor] | None = None,
    ) -> tuple[int, torch.device, torch.dtype, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``batch_layout``'s tuple, then every declared modality's ``(B, D_m)`` input with gaps filled.

        Gaps are zeros, or the ``(D_m,)`` vectors of ``fill`` (one per declared
        modality, in order). Masked rows are selected away rather than
        multiplied by zero, so garbage (even NaN) in them reaches neither the
        output nor the gradients. A modality given without a presence mask is
        passed through as it is (no selection: nothing to fill, and nothing
        for autograd to record).
        """
        batch, device, dtype, mask = self.batch_layout(features, present)
        fills = [None] * len(self.modalities) if fill is None else list(fill)
        inputs: dict[str, torch.Tensor] = {}
        for (modality, dim), gap in zip(self.input_dims.items(), fills, strict=True):
            x = features.get(modality)
            if x is not None and (present is None or present.get(modality) is None):
                inputs[modality] = x
            elif x is not None:
                inputs[modality] = torch.where(mask[modality][:, None], x, 0.0 if gap is None else gap)
            elif gap is None:
                inputs[modality] = torch.zeros(batch, dim, device=device, dtype=dtype)
            else:
                inputs[modality] = gap.expand(batch, -1)
        return batch, device, dtype, mask, inputs

    def extra_repr(self) -> str:
        maps = f", map_shapes={self.map_shapes}" if self.map_shapes else ""
        return f"input_dims={self.input_dims}, output_dim={self.output_dim}{maps}"
