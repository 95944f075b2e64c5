"""``--set PATH=VALUE``: change values of a pipeline config on the command line.

A variant of a config (another level, fewer demonstrations, a wider encoder) should not need an
edited copy of the file: ``polyfuse run``, ``validate``, ``compare`` and ``tune`` take any number of
``--set``, applied in order after the file is read. PATH is dotted through mappings
(``trainer.warm_start.episodes``); VALUE is YAML (``[16, 32]``, ``1.0e-3``, ``BabyAI-PickupLoc-v0``).
Mappings missing on the way are created, and a component given by name alone (``encoder: sbert``)
opens up as ``{name: sbert}`` so that its params can be set. The result is validated like a file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from polyfuse.errors import PolyfuseError

EXAMPLE = "--set env.id=BabyAI-PickupLoc-v0"
COMPONENT_FIELDS = ("name", "params")  # a component given by name alone opens up when these are set


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="change one config value, e.g. 'trainer.warm_start.episodes=2000' or "
                             "'modalities.image.encoder.params.channels=[16,32]' (VALUE is YAML; repeatable)")


def apply_overrides(data: Any, assignments: Sequence[str]) -> Any:
    """``data`` (a parsed config) with each ``PATH=VALUE`` assignment applied in order, in place."""
    if assignments and not isinstance(data, dict):
        raise PolyfuseError("--set needs a config that is a mapping (env:, modalities:, ...)")
    for assignment in assignments:
        path, value = _parse_assignment(assignment)
        _assign(data, path, value, assignment)
    return data


def describe(source: str, assignments: Sequence[str]) -> str:
    """How errors name a config changed by ``--set``: the file, then the assignments."""
    return " ".join([source, *(f"--set {assignment}" for assignment in assignments)])


def _parse_assignment(assignment: str) -> tuple[list[str], Any]:
    from polyfuse.config import parse_yaml

    path, sep, text = assignment.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(key.strip() for key in keys):
        raise PolyfuseError(f"--set {assignment!r}: expected PATH=VALUE with a dotted config path, e.g. {EXAMPLE}")
    return [key.strip() for key in keys], parse_yaml(text, f"--set {path.strip()}")


def _assign(data: dict[str, Any], keys: list[str], value: Any, assignment: str) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif isinstance(child, str) and keys[depth + 1] in COMPONENT_FIELDS:  # `encoder: sbert`
            child = node[key] = {"name": child}
        elif not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise PolyfuseError(f"--set {assignment!r}: {where} is {child!r}, not a mapping; set {where} as a whole "
                                f"(--set {where}=VALUE)")
        node = child
    node[keys[-1]] = value
