"""The built-in encoders' configs, factories and registration.

Loaded by ``polyfuse --help``, so torch is imported only inside the factories.
Each factory reads the gymnasium space of its observation key and explains a
mismatch (a Discrete space given to ``vector``) with the encoder to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl
from polyfuse.errors import PolyfuseError
from polyfuse.declarations import accepts_space, offers_feature_map

if TYPE_CHECKING:
    from polyfuse.encoding import Encoder

Width = Annotated[int, Field(gt=0, le=65536)]
MAX_GRID_VALUES = 65536


class VectorConfig(ComponentConfig):
    """Params of the ``vector`` encoder."""

    hidden_sizes: list[Width] = Field(
        default_factory=lambda: [64], max_length=8, description="Widths of the hidden Linear layers."
    )
    output_dim: int = Field(64, gt=0, le=65536, description="Width of the last layer (= feature width).")
    activation: Literal["relu", "tanh"] = Field("relu", description="Activation after every layer.")
    rescale: bool = Field(
        True, description="Map a Box space's finite bounds to [-1, 1]; unbounded dimensions pass unchanged."
    )


class FlattenConfig(ComponentConfig):
    """Params of the ``flatten`` encoder (its width is the number of input values)."""

    rescale: bool = Field(
        True,
        description="Map a Box space's finite bounds to [0, 1] (uint8 pixels: divided by 255); unbounded "
        "dimensions pass unchanged.",
    )


class OneHotConfig(ComponentConfig):
    """The ``onehot`` encoder has no params: its width is the number of values (summed over components)."""


class EmbeddingConfig(ComponentConfig):
    """Params of the ``embedding`` encoder."""

    embedding_dim: int = Field(
        16, gt=0, le=4096, description="Width of each component's embedding (features: this x components)."
    )


class SmallCNNConfig(ComponentConfig):
    """Params of the ``small-cnn`` encoder."""

    mode: Literal["image", "grid"] = Field(
        "image",
        description="'image': pixel intensities (uint8 0..255 or float 0..1); 'grid': symbolic cells "
        "holding category codes, e.g. MiniGrid's (7, 7, 3) object/colour/state grid, embedded per channel.",
    )
    channels: list[Width] = Field(
        default_factory=lambda: [32, 64],
        min_length=1,
        max_length=8,
        description="Output channels of each 3x3 convolution; a layer strides by 2 while the map is "
        "at least 4 x pool_size wide.",
    )
    output_dim: int = Field(128, gt=0, le=65536, description="Width of the last layer (= feature width).")
    pool_size: int = Field(4, gt=0, le=64, description="Side the last feature map is average-pooled to.")
    cell_embedding_dim: int = Field(8, gt=0, le=256, description="grid mode: width of each code's embedding.")
    grid_values: int | None = Field(
        None,
        gt=1,
        le=MAX_GRID_VALUES,
        description="grid mode: number of distinct codes per channel; null = the space's high + 1.",
    )


class WordGRUConfig(ComponentConfig):
    """Params of the ``word-gru`` encoder."""

    embedding_dim: int = Field(32, gt=0, le=4096, description="Width of each word's embedding.")
    output_dim: int = Field(128, gt=0, le=65536, description="The GRU's hidden size (= feature width).")
    buckets: int = Field(
        1024, gt=0, le=1_048_576,
        description="Embedding rows words are hashed into; well above the number of distinct words keeps "
        "collisions rare.",
    )
    max_words: int = Field(64, gt=0, le=4096, description="Words read per text; later ones are ignored.")


def _space_error(name: str, space: Any, wants: str, instead: str = "") -> PolyfuseError:
    hint = f"; {instead}" if instead else ""
    return PolyfuseError(f"{name} reads {wants}, but this observation's space is {space}{hint}")


def _other_encoder_hint(space: Any) -> str:
    from gymnasium import spaces

    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return "use onehot or embedding for discrete values"
    if isinstance(space, spaces.Text):
        return "use a text encoder: word-gru (built in) or sbert (pip install polyfuse-sbert)"
    if isinstance(space, spaces.Box) and len(space.shape) in (2, 3):
        return "use small-cnn or timm for images"
    return ""


def _numeric_bounds(name: str, space: Any, rescale: bool) -> tuple[Any, Any]:
    """The bounds to rescale from (``None`` for none), or an error naming the encoder to use instead."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return (space.low, space.high) if rescale else (None, None)
    if isinstance(space, spaces.MultiBinary):
        return (0, 1) if rescale else (None, None)
    wants = "numeric arrays (a Box or MultiBinary space)"
    raise _space_error(name, space, wants, _other_encoder_hint(space))


def _numeric_space(name: str) -> Callable[[Any], None]:
    """The cheap check ``polyfuse validate`` runs (see :mod:`polyfuse.declarations`)."""
    return lambda space: _numeric_bounds(name, space, rescale=False) and None


def _discrete_space(name: str) -> Callable[[Any], None]:
    return lambda space: _discrete_layout(name, space) and None


def _image_space(space: Any) -> None:
    from gymnasium import spaces

    if not isinstance(space, spaces.Box) or len(space.shape) not in (2, 3):
        wants = "images or grids (a Box space of shape (H, W, C) or (H, W))"
        raise _space_error("small-cnn", space, wants, _other_encoder_hint(space))


def _text_space(space: Any) -> None:
    from gymnasium import spaces

    if not isinstance(space, spaces.Text):
        raise _space_error("word-gru", space, "text (a Text space)", _other_encoder_hint(space))


@accepts_space(_numeric_space("vector"))
def build_vector(config: VectorConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.vector import VectorEncoder

    low, high = _numeric_bounds("vector", space, config.rescale)
    return VectorEncoder(
        tuple(space.shape), config.hidden_sizes, config.output_dim, config.activation, low=low, high=high
    )


@accepts_space(_numeric_space("flatten"))
def build_flatten(config: FlattenConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.vector import VectorEncoder

    low, high = _numeric_bounds("flatten", space, config.rescale)
    return VectorEncoder(tuple(space.shape), [], None, low=low, high=high, target_range=(0.0, 1.0))


def _discrete_layout(name: str, space: Any) -> tuple[list[int], list[int], bool]:
    """Component sizes, start values and whether the space is MultiDiscrete."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return [int(space.n)], [int(space.start)], False
    if isinstance(space, spaces.MultiDiscrete) and len(space.nvec.shape) == 1:
        return [int(n) for n in space.nvec], [int(s) for s in space.start], True
    wants = "discrete values (a Discrete or 1-D MultiDiscrete space)"
    raise _space_error(name, space, wants, _other_encoder_hint(space))


@accepts_space(_discrete_space("onehot"))
def build_onehot(config: OneHotConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.discrete import OneHotEncoder

    return OneHotEncoder(*_discrete_layout("onehot", space))


@accepts_space(_discrete_space("embedding"))
def build_embedding(config: EmbeddingConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.discrete import EmbeddingEncoder

    return EmbeddingEncoder(*_discrete_layout("embedding", space), embedding_dim=config.embedding_dim)


@offers_feature_map()
@accepts_space(_image_space)
def build_small_cnn(config: SmallCNNConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.small_cnn import SmallCNNEncoder

    _image_space(space)
    shape = tuple(space.shape) if len(space.shape) == 3 else (*space.shape, 1)
    grid_values = config.grid_values
    if config.mode == "grid" and grid_values is None:
        high = float(space.high.max())
        if not high < MAX_GRID_VALUES:
            raise PolyfuseError(
                f"small-cnn: the space's high ({high:g}) does not bound the grid codes; set grid_values "
                "(the number of distinct codes per channel) in the encoder's params"
            )
        grid_values = int(high) + 1
    return SmallCNNEncoder(
        shape,
        config.channels,
        config.output_dim,
        config.pool_size,
        mode=config.mode,
        grid_values=grid_values or 0,
        cell_embedding_dim=config.cell_embedding_dim,
    )


@accepts_space(_text_space)
def build_word_gru(config: WordGRUConfig, space: Any = None) -> Encoder:
    from polyfuse.encoders.text import WordGRUEncoder

    _text_space(space)
    return WordGRUEncoder(config.embedding_dim, config.output_dim, config.buckets, config.max_words)


@hookimpl
def register_encoders(register: Callable[..., Any]) -> None:
    register("vector", build_vector, config=VectorConfig,
             description="MLP over numeric arrays (Box, MultiBinary), bounds rescaled to [-1, 1]")
    register("flatten", build_flatten, config=FlattenConfig,
             description="Numeric arrays (Box, MultiBinary) flattened as they are, bounds rescaled to [0, 1]")
    register("onehot", build_onehot, config=OneHotConfig,
             description="One-hot vectors for discrete values (Discrete, MultiDiscrete)")
    register("embedding", build_embedding, config=EmbeddingConfig,
             description="Learned embeddings for discrete values (Discrete, MultiDiscrete)")
    register("small-cnn", build_small_cnn, config=SmallCNNConfig,
             description="Small CNN for small images (8x8 digits) and symbolic grids (MiniGrid 7x7x3)")
    register("word-gru", build_word_gru, config=WordGRUConfig,
             description="Learned text encoder: hashed word embeddings read by a GRU (instructions, missions)")
