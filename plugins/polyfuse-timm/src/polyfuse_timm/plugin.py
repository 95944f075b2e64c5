"""Registers the ``timm`` encoder; timm and torch are imported only to check a config or build an encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import accepts_space, offers_feature_map

if TYPE_CHECKING:
    from polyfuse_timm.encoder import TimmEncoder

RESERVED_MODEL_KWARGS = {
    "pretrained",
    "pretrained_cfg_overlay",
    "num_classes",
    "features_only",
    "in_chans",
    "img_size",
}


class TimmConfig(ComponentConfig):
    """Params of the ``timm`` encoder."""

    model: str = Field(
        min_length=1,
        max_length=200,
        description="timm architecture, e.g. resnet18 or efficientnet_b0 (any name in timm.list_models()); "
        "a pretrained tag (resnet18.a1_in1k) selects that tag's preprocessing and hub weights.",
    )
    checkpoint: Path | None = Field(
        None,
        description="Local weights file: .safetensors, or a torch state dict (.pth/.pt/.bin, loaded with "
        "weights_only=True) in timm's format; null = random init unless pretrained is true.",
    )
    pretrained: bool = Field(
        False,
        description="Download timm's pretrained weights from the Hugging Face hub (needs internet; "
        "offline, put the file in checkpoint instead).",
    )
    trainable: bool = Field(
        False, description="Fine-tune the model; false = frozen (eval mode, no gradients, features cached)."
    )
    trainable_stages: int | None = Field(
        None,
        ge=1,
        le=64,
        description="With trainable: train only the last N stages (as timm's feature_info counts them) and "
        "what follows them; earlier stages stay frozen in eval mode. null = train everything.",
    )
    image_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="Side of the square images are resized to; null = the model's default input size "
        "(timm's data config, e.g. 224). Smaller is much faster for small observations.",
    )
    interpolation: Literal["model", "nearest", "bilinear", "bicubic"] = Field(
        "model",
        description="Resize filter; 'model' = timm's data config (usually bicubic). 'nearest' keeps "
        "symbolic grids crisp.",
    )
    feature_map: int | None = Field(
        None,
        ge=-64,
        le=64,
        description="Also expose a spatial feature map (B, C, H, W) through forward_spatial() for "
        "spatial fusers: the index of the stage it comes from (-1 = last); null = pooled vector only.",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for timm.create_model, e.g. {drop_path_rate: 0.1}.",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from polyfuse_timm.models import check_model_name

        check_model_name(name)
        return name

    @field_validator("model_kwargs")
    @classmethod
    def _no_reserved_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_MODEL_KWARGS & set(kwargs))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set here: use the encoder's own params "
                "(checkpoint, pretrained, image_size, feature_map)"
            )
        return kwargs

    @model_validator(mode="after")
    def _consistent(self) -> TimmConfig:
        if self.checkpoint is not None and self.pretrained:
            raise ValueError("checkpoint already gives the weights: drop pretrained (or the checkpoint)")
        if self.trainable_stages is not None and not self.trainable:
            raise ValueError("trainable_stages needs trainable: true")
        return self


IMAGE_CHANNELS = (1, 3, 4)
"""polyfuse.encoding.IMAGE_CHANNELS, spelled out: importing it would import torch."""


def _image_space(space: Any) -> str | None:
    """timm reads images; checked by `polyfuse validate` before any weights are loaded."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box) and (
        len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in IMAGE_CHANNELS)
    ):
        return None
    return "images (a Box space of shape (H, W, C) with C in 1, 3, 4, or (H, W))"


@offers_feature_map(lambda config: config.feature_map is not None,
                    hint="set the timm encoder's params.feature_map (e.g. -1 for the last stage)")
@accepts_space(_image_space)
def build_timm(config: TimmConfig, space: Any = None) -> TimmEncoder:
    from polyfuse_timm.encoder import TimmEncoder

    return TimmEncoder.from_config(config, space)


@hookimpl
def register_encoders(register: Callable[..., Any]) -> None:
    register(
        "timm",
        build_timm,
        config=TimmConfig,
        description="Image encoder from any timm model: random, local-checkpoint or hub weights",
    )
