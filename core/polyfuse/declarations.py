"""What a component declares about itself, so ``polyfuse validate`` can check a config without building it.

Encoders: the observation spaces they read. Fusers: how many modalities they
can combine with given params. Optimizers: where they learn from. Datasets: the
observation space they hold, read cheaply (for pipelines without an env).

Building an encoder can mean loading a pretrained model (seconds, hundreds of
megabytes) only to learn that it was given the wrong kind of observation. An
encoder factory declares a cheap check instead::

    @accepts_space(lambda space: None if isinstance(space, spaces.Text) else "text (a Text space)")
    def build_sbert(config, space=None): ...

The check returns ``None`` when the space fits, else what the encoder reads
(shown as "sbert reads text (a Text space), but ... is Box(...)"); it may also
raise :class:`~polyfuse.errors.PolyfuseError` with a whole message. It must not
import torch or load weights. Factories without a declaration are not checked
before the run builds them.

An optimizer factory declares what its optimizer's ``learns_from`` will be
(``"env"`` or ``"dataset"``), so the data it needs is checked without importing
torch (``@learns_from("dataset")``); undeclared ones are built to ask them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from polyfuse.errors import PolyfuseError

SpaceCheck = Callable[[Any], "str | None"]
Factory = TypeVar("Factory", bound=Callable[..., Any])
ATTRIBUTE = "polyfuse_space_check"
LEARNS_FROM = "polyfuse_learns_from"
MODALITY_CHECK = "polyfuse_modality_check"
DATASET_SPACE = "polyfuse_dataset_space"
ModalityCheck = Callable[[Any, Sequence[str]], "str | None"]


def accepts_space(check: SpaceCheck) -> Callable[[Factory], Factory]:
    """Mark an encoder factory with the cheap check of the spaces it reads."""

    def mark(factory: Factory) -> Factory:
        setattr(factory, ATTRIBUTE, check)
        return factory

    return mark


def space_mismatch(factory: Callable[..., Any], name: str, space: Any) -> str | None:
    """Why encoder ``name`` cannot read ``space`` (None when it can, or when its factory declares nothing)."""
    check: SpaceCheck | None = getattr(factory, ATTRIBUTE, None)
    if check is None:
        return None
    try:
        wants = check(space)
    except PolyfuseError as exc:
        return str(exc)
    if wants is None:
        return None
    return f"{name} reads {wants}, but this observation's space is {space}"


def learns_from(source: str) -> Callable[[Factory], Factory]:
    """Mark an optimizer factory with where its optimizer learns from (``"env"`` or ``"dataset"``)."""
    if source not in {"env", "dataset"}:
        raise ValueError(f"learns_from is 'env' or 'dataset', got {source!r}")

    def mark(factory: Factory) -> Factory:
        setattr(factory, LEARNS_FROM, source)
        return factory

    return mark


def declared_learns_from(factory: Callable[..., Any]) -> str | None:
    """What an optimizer factory declared with :func:`learns_from` (None when it declared nothing)."""
    return getattr(factory, LEARNS_FROM, None)


def accepts_modalities(check: ModalityCheck) -> Callable[[Factory], Factory]:
    """Mark a fuser factory with a cheap check of its validated config against the modality names it fuses.

    The check returns ``None`` when the fuser can be built, else the cause and
    fix (e.g. a tensor product too large for this many modalities).
    """

    def mark(factory: Factory) -> Factory:
        setattr(factory, MODALITY_CHECK, check)
        return factory

    return mark


def modality_mismatch(factory: Callable[..., Any], config: Any, modalities: Sequence[str]) -> str | None:
    """Why a fuser cannot combine ``modalities`` with ``config`` (None when it can, or declared nothing)."""
    check: ModalityCheck | None = getattr(factory, MODALITY_CHECK, None)
    if check is None:
        return None
    try:
        return check(config, modalities)
    except PolyfuseError as exc:
        return str(exc)


def dataset_space(read: Callable[[Any], Any]) -> Callable[[Factory], Factory]:
    """Mark a dataset factory with a cheap reader of its observation space from its validated config.

    The reader returns a gymnasium space, or ``None`` when it cannot tell
    without loading the data.
    """

    def mark(factory: Factory) -> Factory:
        setattr(factory, DATASET_SPACE, read)
        return factory

    return mark


def declared_dataset_space(factory: Callable[..., Any], config: Any) -> Any:
    """The observation space a dataset factory declares for ``config`` (None when unknown)."""
    read = getattr(factory, DATASET_SPACE, None)
    if read is None:
        return None
    try:
        return read(config)
    except (PolyfuseError, OSError, ValueError, KeyError, TypeError):
        return None  # the dataset's own reader reports a bad file when the run loads it
