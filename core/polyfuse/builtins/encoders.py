"""The core's encoders, registered through the same hook as any plugin's.

Shapes and value ranges come from the observation's gymnasium space, so a
config names only what a person would choose (widths, channels).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl
from polyfuse.errors import PolyfuseError


class VectorConfig(ComponentConfig):
    hidden_sizes: list[int] = Field(default_factory=lambda: [64], description="MLP hidden layer widths")
    output_dim: int = Field(64, gt=0, description="Feature width")


class OneHotConfig(ComponentConfig):
    pass


class EmbeddingConfig(ComponentConfig):
    output_dim: int = Field(16, gt=0, description="Width of each value's learned vector")


class SmallCNNConfig(ComponentConfig):
    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1,
                                description="Output channels of each 3x3 convolution")
    output_dim: int = Field(128, gt=0, description="Feature width")
    scale: float | None = Field(None, gt=0, description="Divide pixels by this; default: the space's maximum")


def _require(space: Any, kinds: tuple[str, ...], encoder: str) -> Any:
    if space is None or type(space).__name__ not in kinds:
        found = "no space" if space is None else type(space).__name__
        raise PolyfuseError(f"encoder {encoder!r} needs an observation of type {' or '.join(kinds)}, got {found}")
    return space


def build_vector(config: VectorConfig, space: Any = None) -> Any:
    from polyfuse.encoders.vector import VectorEncoder

    space = _require(space, ("Box",), "vector")
    return VectorEncoder(space.shape, config.hidden_sizes, config.output_dim, space=space)


def build_onehot(config: OneHotConfig, space: Any = None) -> Any:
    from polyfuse.encoders.discrete import OneHotEncoder

    space = _require(space, ("Discrete",), "onehot")
    return OneHotEncoder(int(space.n), int(space.start))


def build_embedding(config: EmbeddingConfig, space: Any = None) -> Any:
    from polyfuse.encoders.discrete import EmbeddingEncoder

    space = _require(space, ("Discrete",), "embedding")
    return EmbeddingEncoder(int(space.n), config.output_dim, int(space.start))


def build_small_cnn(config: SmallCNNConfig, space: Any = None) -> Any:
    import numpy as np

    from polyfuse.encoders.small_cnn import SmallCNN

    space = _require(space, ("Box",), "small-cnn")
    shape = tuple(space.shape) if len(space.shape) == 3 else (*space.shape, 1)
    if len(shape) != 3:
        raise PolyfuseError(f"encoder 'small-cnn' needs (H, W) or (H, W, C) images, the space has shape {space.shape}")
    high = float(np.max(space.high))
    scale = config.scale or (high if np.isfinite(high) and high > 0 else 1.0)
    return SmallCNN(shape, config.channels, config.output_dim, scale)


@hookimpl
def register_encoders(register):  # type: ignore[no-untyped-def]
    register("vector", build_vector, config=VectorConfig, description="MLP over numeric arrays (Box spaces)")
    register("onehot", build_onehot, config=OneHotConfig, description="One-hot vector of a discrete value")
    register("embedding", build_embedding, config=EmbeddingConfig,
             description="Learned vector per discrete value")
    register("small-cnn", build_small_cnn, config=SmallCNNConfig,
             description="Small stride-1 CNN for small images and symbolic grids (digits, MiniGrid)")
