"""A timm model as a polyfuse image encoder: raw observation batches in, pooled features out.

Preprocessing follows the model's timm data config (input size, mean, std,
interpolation) but resizes the whole image instead of centre-cropping it: an
RL observation has no background to spare. Grayscale is repeated to RGB,
RGBA loses its alpha channel, and small observations (8x8 digits, 7x7 grids)
are resized up to the model's input size (or ``image_size``).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from polyfuse.encoding import IMAGE_CHANNELS, Encoder, image_batch, weights_digest
from polyfuse.errors import PolyfuseError
from polyfuse_timm.models import create_model
from polyfuse_timm.plugin import TimmConfig
from polyfuse_timm.stages import freeze_early_stages


def _check_space(space: Any) -> None:
    from gymnasium import spaces

    if space is None or (
        isinstance(space, spaces.Box)
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in IMAGE_CHANNELS))
    ):
        return
    raise PolyfuseError(
        f"timm reads images (a Box space of shape (H, W, C) with C in 1, 3, 4, or (H, W)), but this "
        f"observation's space is {space}"
    )


class TimmEncoder(Encoder):
    """Pooled features of a timm model (``num_classes=0``); optionally its spatial feature map too.

    Frozen (the default), the model stays in eval mode and runs without
    gradients, and polyfuse caches its features; ``trainable`` fine-tunes it,
    optionally only its last ``trainable_stages`` stages.
    """

    def __init__(self, model: nn.Module, config: TimmConfig) -> None:
        super().__init__()
        from timm.data import resolve_data_config

        self.model = model
        self.config = config
        data = resolve_data_config({}, model=model)
        side = config.image_size
        self.input_size: tuple[int, int] = (side, side) if side else tuple(data["input_size"][1:])  # type: ignore[assignment]
        self.interpolation = (
            data["interpolation"] if config.interpolation == "model" else config.interpolation
        )
        if self.interpolation not in ("nearest", "bilinear", "bicubic"):
            self.interpolation = "bicubic"  # timm's 'random' or 'lanczos' have no tensor equivalent
        mean = torch.tensor(data["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(data["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / std, persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)
        if not config.trainable:
            model.requires_grad_(False)
            self._frozen: list[nn.Module] = [model]
        elif config.trainable_stages is not None:
            self._frozen = freeze_early_stages(model, config.trainable_stages)
        else:
            self._frozen = []
        self.feature_map_shape: tuple[int, int, int] | None = None
        self.output_dim = self._probe()
        self.train()

    @classmethod
    def from_config(cls, config: TimmConfig, space: Any = None) -> TimmEncoder:
        """Check the observation space, create the model with its weights, and wrap it."""
        _check_space(space)
        import timm

        kwargs = dict(config.model_kwargs)
        if config.image_size and timm.models.get_pretrained_cfg_value(config.model, "fixed_input_size"):
            kwargs["img_size"] = config.image_size  # e.g. a ViT: its position embedding must match
        try:
            model = create_model(config.model, config.checkpoint, config.pretrained, **kwargs)
        except TypeError as exc:
            raise PolyfuseError(
                f"timm model {config.model!r} rejects params.model_kwargs {kwargs}: {exc}"
            ) from None
        return cls(model, config)

    def _probe(self) -> int:
        """Run one blank image through the model: the pooled width, and the feature map's shape if asked."""
        was_training = self.model.training
        self.model.eval()
        blank = torch.zeros(1, 3, *self.input_size)
        try:
            with torch.no_grad():
                pooled = self.model(blank)
                if self.config.feature_map is not None:
                    self.feature_map_shape = tuple(self._spatial(blank)[1].shape[1:])  # type: ignore[assignment]
        except PolyfuseError:
            raise
        except Exception as exc:
            raise PolyfuseError(
                f"timm model {self.config.model!r} cannot encode "
                f"{self.input_size[0]}x{self.input_size[1]} images "
                f"({type(exc).__name__}: {str(exc)[:200]}); choose another image_size"
            ) from None
        finally:
            self.model.train(was_training)
        if pooled.dim() != 2:
            raise PolyfuseError(
                f"timm model {self.config.model!r} returns {tuple(pooled.shape)} features, not (B, D)"
            )
        return int(pooled.shape[1])

    def train(self, mode: bool = True) -> TimmEncoder:
        """Frozen parts stay in eval mode (fixed BatchNorm statistics, no dropout) while the rest trains."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def preprocess(self, batch: Any) -> torch.Tensor:
        """Raw images to the normalised ``(B, 3, H, W)`` float tensor the model expects."""
        x = image_batch(batch, self.modality, self.scale.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:
            x = x[:, :3]
        if tuple(x.shape[2:]) != self.input_size:
            shrinking = x.shape[2] > self.input_size[0] or x.shape[3] > self.input_size[1]
            smooth = self.interpolation != "nearest"
            x = F.interpolate(
                x,
                size=self.input_size,
                mode=self.interpolation,
                align_corners=False if smooth else None,
                antialias=smooth and shrinking,
            )
        return torch.addcmul(self.shift, x, self.scale)

    def forward(self, batch: Any) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable):
            return self.model(self.preprocess(batch))

    def forward_spatial(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled (B, D), feature map (B, C, H, W))`` from one pass, for spatial fusers.

        Needs ``feature_map`` in the config; the map's shape is ``feature_map_shape``.
        """
        if self.config.feature_map is None:
            raise PolyfuseError(
                f"modality {self.modality!r}: set the timm encoder's params.feature_map "
                "(e.g. -1 for the last stage) to get spatial feature maps"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable):
            return self._spatial(self.preprocess(batch))

    def _spatial(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self.model, "forward_intermediates"):
            raise PolyfuseError(
                f"timm model {self.config.model!r} has no forward_intermediates, so it cannot give "
                "feature maps; drop params.feature_map or choose another model"
            )
        try:
            final, maps = self.model.forward_intermediates(x, indices=[self.config.feature_map])
        except (AssertionError, IndexError) as exc:
            raise PolyfuseError(
                f"timm model {self.config.model!r} has no stage {self.config.feature_map} "
                f"({len(getattr(self.model, 'feature_info', []))} stages; -1 is the last): {exc}"
            ) from None
        return self.model.forward_head(final), maps[0]

    def identity(self) -> str:
        """Architecture, weights and preprocessing: everything the pooled features depend on."""
        preprocessing = {
            "size": self.input_size,
            "interpolation": self.interpolation,
            "scale": self.scale.flatten().tolist(),
            "shift": self.shift.flatten().tolist(),
            "model_kwargs": self.config.model_kwargs,
        }
        settings = json.dumps(preprocessing, sort_keys=True)
        return f"timm:{self.config.model}:{settings}:weights={weights_digest(self.model)}"
