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

Spatial feature maps: an encoder factory declares whether the encoder it
builds with a config offers a feature map (``forward_spatial``), and a fuser
factory declares whose maps it consumes::

    @offers_feature_map(lambda config: config.feature_map is not None, hint="set params.feature_map")
    def build_timm(config, space=None): ...

    @consumes_maps(lambda config, offers: [config.image] if config.image else [m for m, o in offers.items() if o])
    def build_mmcnn(config, input_dims, map_shapes): ...

A fuser factory marked with :func:`consumes_maps` receives a third context
argument, ``map_shapes`` (``{modality: (C, H, W)}``). :func:`map_problem` is
what ``polyfuse validate`` and the network builder both ask: a fuser wanting the
map of a modality whose encoder gives none is refused, naming both.

An optimizer factory declares what its optimizer's ``learns_from`` will be
(``"env"`` or ``"dataset"``), so the data it needs is checked without importing
torch (``@learns_from("dataset")``); undeclared ones are built to ask them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from polyfuse.errors import PolyfuseError

SpaceCheck = Callable[[Any], "str | None"]
Factory = TypeVar("Factory", bound=Callable[..., Any])
ATTRIBUTE = "polyfuse_space_check"
LEARNS_FROM = "polyfuse_learns_from"
MODALITY_CHECK = "polyfuse_modality_check"
DATASET_SPACE = "polyfuse_dataset_space"
ModalityCheck = Callable[[Any, Sequence[str]], "str | None"]
FEATURE_MAP = "polyfuse_feature_map"
CONSUMES_MAPS = "polyfuse_consumes_maps"
MapSelect = Callable[[Any, Mapping[str, "bool | None"]], "Sequence[str] | None"]


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


def offers_feature_map(
    when: bool | Callable[[Any], bool] = True, hint: str = ""
) -> Callable[[Factory], Factory]:
    """Mark an encoder factory: its encoder offers a spatial feature map (always, or when ``when(config)``).

    Such an encoder has ``forward_spatial(batch) -> (pooled (B, D), map (B, C, H, W))``
    and a ``feature_map_shape`` of ``(C, H, W)`` (``None`` when this config
    gives no map). ``hint`` says how to turn the map on when ``when`` is false
    (e.g. "set params.feature_map"). An undeclared factory offers no map as far
    as ``polyfuse validate`` knows.
    """

    def mark(factory: Factory) -> Factory:
        setattr(factory, FEATURE_MAP, (when, hint))
        return factory

    return mark


def declared_feature_map(factory: Callable[..., Any], config: Any) -> tuple[bool, str]:
    """Whether an encoder factory's encoder offers a map with ``config`` (False when undeclared), and the hint."""
    declared = getattr(factory, FEATURE_MAP, None)
    if declared is None:
        return False, ""
    when, hint = declared
    return bool(when(config) if callable(when) else when), hint


def consumes_maps(select: MapSelect) -> Callable[[Factory], Factory]:
    """Mark a fuser factory as spatial: ``select(config, offers)`` names the modalities whose maps it reads.

    ``offers`` maps every fused modality to whether its encoder gives a map
    (``None``: its encoder does not say, before the network is built). Return
    the modalities (an empty list: none offers what the fuser needs), ``None``
    when this config reads no maps at all (a fuser for which maps are an
    option: it then fuses vectors like any other), or raise
    :class:`~polyfuse.errors.PolyfuseError` naming the param to set (several
    candidates, say). The factory is then called with ``map_shapes=``.
    """

    def mark(factory: Factory) -> Factory:
        setattr(factory, CONSUMES_MAPS, select)
        return factory

    return mark


def is_spatial(factory: Callable[..., Any]) -> bool:
    """Whether a fuser factory declared :func:`consumes_maps`."""
    return getattr(factory, CONSUMES_MAPS, None) is not None


def map_problem(
    fuser_name: str,
    factory: Callable[..., Any],
    config: Any,
    encoders: Mapping[str, tuple[str, bool | None, str]],
) -> tuple[list[str], str | None]:
    """The modalities whose maps a spatial fuser reads, and why it cannot have them (None when it can).

    ``encoders`` maps each fused modality to ``(encoder name, offers a map, hint)``
    (offers ``None``: unknown until built). Vector fusers read no map: ``([], None)``.
    """
    select: MapSelect | None = getattr(factory, CONSUMES_MAPS, None)
    if select is None:
        return [], None
    offers = {modality: offered for modality, (_, offered, _) in encoders.items()}
    try:
        selected = select(config, offers)
    except PolyfuseError as exc:
        return [], f"fuser {fuser_name!r}: {exc}"
    if selected is None:  # maps are an option this config does not take
        return [], None
    wanted = list(selected)
    if not wanted:
        if any(offered is None for offered in offers.values()):
            return [], None  # an undeclared encoder may give one: the network builder checks
        listed = ", ".join(f"{m} ({name})" for m, (name, _, _) in encoders.items())
        return [], (
            f"fuser {fuser_name!r} fuses a spatial feature map, but no modality's encoder gives one "
            f"(modalities: {listed}); encode an image modality with an encoder that offers a map "
            "(small-cnn; timm with params.feature_map) or choose a vector fuser"
        )
    for modality in wanted:
        if modality not in encoders:
            return wanted, (
                f"fuser {fuser_name!r} consumes the feature map of modality {modality!r}, which the pipeline "
                f"does not have (its modalities: {', '.join(encoders)})"
            )
        name, offered, hint = encoders[modality]
        if offered is False:
            how = f"{hint}, or use" if hint else "use"
            return wanted, (
                f"fuser {fuser_name!r} consumes the spatial feature map of modality {modality!r}, but its "
                f"encoder {name!r} gives none with these params; {how} an encoder that offers a map "
                "(small-cnn; timm with params.feature_map), or choose a vector fuser"
            )
    return wanted, None
