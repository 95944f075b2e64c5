"""Whether a policy can act in another environment: the observations it reads and the actions it chooses.

A policy reads one observation key per modality and was built for that
key's space (an image's shape and bounds, a text's length); zero-shot
transfer (a BabyAI policy on another level) needs those spaces and the
action space unchanged. Other keys of the new environment are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polyfuse.config import ModalityConfig
from polyfuse.errors import PolyfuseError


def check_compatible(
    modalities: Mapping[str, ModalityConfig],
    trained_observations: Any,
    trained_actions: Any,
    target_observations: Any,
    target_actions: Any,
    target: str,
) -> None:
    """Raise a :class:`PolyfuseError` naming each modality (and the action space) ``target`` does not fit."""
    problems = []
    available = getattr(target_observations, "spaces", {})
    for modality, config in modalities.items():
        key = config.key or modality
        trained = trained_observations[key]
        if key not in available:
            problems.append(f"modality {modality!r} reads observation key {key!r}, which {target} lacks "
                            f"(it has {', '.join(sorted(available)) or 'none'})")
        elif available[key] != trained:
            problems.append(f"modality {modality!r} (observation key {key!r}) is {_shown(available[key])} in "
                            f"{target} and was {_shown(trained)} in training")
    if target_actions != trained_actions:
        problems.append(f"the action space is {_shown(target_actions)} in {target} and was "
                        f"{_shown(trained_actions)} in training")
    if problems:
        raise PolyfuseError(
            f"the policy cannot act in {target}: " + "; ".join(problems)
            + "; evaluate it on environments with the observations and actions it was trained on"
        )


def _shown(space: Any) -> str:
    """A space in one short line: a Box with per-element bounds prints whole arrays otherwise."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or getattr(low, "size", 1) == 1:
        return str(space)
    bounds = f"{low.min()}..{high.max()}" if (low == low.flat[0]).all() and (high == high.flat[0]).all() \
        else f"{low.min()}..{high.max()} per element"
    return f"{type(space).__name__}({bounds}, {space.shape}, {space.dtype})"
