"""Registers the `sbert` encoder; sentence-transformers is imported only when one is built."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import accepts_space


class SbertConfig(ComponentConfig):
    model: str | None = Field(
        None, description="A sentence-transformers model name or local folder; default: the bundled all-MiniLM-L6-v2"
    )
    trainable: bool = Field(False, description="Fine-tune the transformer (gradients flow through it)")
    normalize: bool = Field(True, description="Scale embeddings to unit length")
    batch_size: int = Field(64, gt=0, description="Texts encoded per forward pass when frozen")
    max_seq_length: int | None = Field(
        None, gt=0, description="Truncate longer texts to this many tokens; default: the model's own limit"
    )


def _text_space(space: Any) -> str | None:
    """sbert reads strings; checked by `polyfuse validate` before the model is loaded."""
    from gymnasium import spaces

    return None if isinstance(space, spaces.Text) else "text (a Text space)"


@accepts_space(_text_space)
def build_sbert(config: SbertConfig, space: Any = None) -> Any:
    from polyfuse_sbert.encoder import SbertEncoder

    return SbertEncoder.from_config(config)


@hookimpl
def register_encoders(register):  # type: ignore[no-untyped-def]
    register("sbert", build_sbert, config=SbertConfig,
             description="sentence-transformers text encoder (bundled all-MiniLM-L6-v2 by default)")
