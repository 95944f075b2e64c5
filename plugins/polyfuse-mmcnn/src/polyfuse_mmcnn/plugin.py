"""Registration of the ``mmcnn`` fuser: its config, the maps it consumes, a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_mmcnn.fuser`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import consumes_maps
from polyfuse.errors import PolyfuseError
from pydantic import Field

if TYPE_CHECKING:
    from polyfuse_mmcnn.fuser import MMCNNFuser


class MMCNNConfig(ComponentConfig):
    """Params of the ``mmcnn`` fuser."""

    image: str | None = Field(
        None,
        min_length=1,
        description="The modality whose spatial feature map is fused; null = the one modality whose encoder "
        "gives a map (small-cnn, timm with params.feature_map).",
    )
    conditioning: Literal["film", "tile"] = Field(
        "film",
        description="'film': every other modality predicts a per-channel scale and shift for each conv block "
        "(FiLM, as in the BabyAI baselines); 'tile': their embeddings are tiled over the grid and "
        "concatenated to the map's channels before the first block.",
    )
    depth: int = Field(2, ge=1, le=8, description="Number of conv blocks (3x3 conv, conditioning, ReLU).")
    width: int = Field(64, gt=0, le=1024, description="Channels of every conv block (= pooled width).")
    conditioning_dim: int = Field(
        64, gt=0, le=4096, description="Width each conditioning modality is embedded to (Linear+ReLU)."
    )
    coordinates: bool = Field(
        True,
        description="Append two coordinate channels (x, y in [-1, 1]) to the map, so conditioning can "
        "select positions as well as channels.",
    )
    pooling: Literal["max", "mean"] = Field("max", description="Pooling of the last block's map.")
    pool_size: int = Field(
        1,
        gt=0,
        le=64,
        description="Side the last block's map is pooled to, then flattened: 1 = global pooling; larger keeps "
        "where things are (width x pool_size^2 features).",
    )
    output_dim: int = Field(128, gt=0, le=65536, description="Width of the fused output (Linear+ReLU).")


def maps_wanted(config: MMCNNConfig, offers: Mapping[str, bool | None]) -> Sequence[str]:
    """The one modality whose map mmcnn reads (checked by `polyfuse validate` without building anything)."""
    if config.image is not None:
        return [config.image]
    with_maps = [modality for modality, offered in offers.items() if offered]
    if len(with_maps) > 1:
        raise PolyfuseError(
            f"the encoders of {', '.join(map(repr, with_maps))} all give feature maps; set params.image to "
            "the modality mmcnn should fuse the others into"
        )
    return with_maps


@consumes_maps(maps_wanted)
def build_mmcnn(
    config: MMCNNConfig, input_dims: Mapping[str, int], map_shapes: Mapping[str, Any]
) -> MMCNNFuser:
    from polyfuse_mmcnn.fuser import MMCNNFuser

    return MMCNNFuser.from_config(config, input_dims, map_shapes)


@hookimpl
def register_fusers(register: Callable[..., Any]) -> None:
    register(
        "mmcnn",
        build_mmcnn,
        config=MMCNNConfig,
        description="Fusion inside a CNN: an image's feature map conditioned on the other modalities (FiLM or tile)",
    )
