"""What a judge's templates can say about a segment: its text observations, info fields and action names.

A template is a Python format string filled from one segment. The fields are

- every text observation, at the segment's last step (``{question}``, ``{mission}``);
- every scalar or text info entry of the last step (``{expert_action}``, ``{facing}``);
- ``{action}``: the name of the last action, ``{actions}``: the names of all of them, comma-separated;
- ``{steps}``: the segment's length.

A ``!n`` conversion names an action index: ``{expert_action!n}`` is ``"7"``
on DigitsVQA where ``{expert_action}`` is ``7``, ``"yes"`` where it is ``10``.
Action names come from the judge's ``action_names`` param, else from the
environment named by its ``env`` param (see :func:`env_action_names`), else
they are the indices themselves.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import Segment

ACTION_NAMES_METADATA = "polyfuse.action_names"


def env_action_names(env_id: str, kwargs: Mapping[str, Any] | None = None) -> list[str] | None:
    """An environment's action names: ``metadata["polyfuse.action_names"]``, DigitsVQA's ``answers``, minigrid's
    ``actions`` enum; ``None`` when it declares none (its actions are then called by their indices)."""
    from polyfuse.envs import make_env

    env = make_env(env_id, kwargs)
    try:
        unwrapped = env.unwrapped
        names = unwrapped.metadata.get(ACTION_NAMES_METADATA) or getattr(unwrapped, "answers", None)
        if names is None and hasattr(unwrapped, "actions"):  # minigrid: an IntEnum of the actions
            names = [action.name for action in sorted(unwrapped.actions, key=int)]
        return [str(name) for name in names] if names is not None else None
    finally:
        env.close()


class ActionNames:
    """Index → name; an index without a name is written as the number."""

    def __init__(self, names: Sequence[str] | None) -> None:
        self.names = list(names or [])

    def __call__(self, index: Any) -> str:
        number = int(index)
        return self.names[number] if 0 <= number < len(self.names) else str(number)


def segment_fields(segment: Segment, names: ActionNames) -> dict[str, Any]:
    """The values a template can name for ``segment`` (see the module docstring)."""
    fields: dict[str, Any] = {}
    last = segment.infos[-1] if segment.infos else {}
    for key, value in last.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool)):
            fields[key] = value
    for key, value in segment.observations.items():
        if isinstance(value, (tuple, list)) and value and isinstance(value[-1], str):
            fields[key] = value[-1]
    actions = np.asarray(segment.actions).reshape(len(segment), -1)[:, 0]
    fields["action"] = names(actions[-1]) if len(actions) else ""
    fields["actions"] = ", ".join(names(a) for a in actions)
    fields["steps"] = len(segment)
    return fields


class _Formatter(string.Formatter):
    def __init__(self, names: ActionNames) -> None:
        self.names = names

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "n":
            return self.names(value)
        return super().convert_field(value, conversion)


class Template:
    """A format string over :func:`segment_fields`; a field the segment lacks is an error naming those it has."""

    def __init__(self, text: str, names: ActionNames, param: str) -> None:
        self.text, self.names, self.param = text, names, param
        self.formatter = _Formatter(names)
        try:
            list(self.formatter.parse(text))
        except ValueError as exc:
            raise PolyfuseError(f"params.{param}: {exc} in template {text!r}") from None

    def render(self, segment: Segment) -> str:
        fields = segment_fields(segment, self.names)
        try:
            return self.formatter.vformat(self.text, (), fields)
        except (KeyError, IndexError) as exc:
            raise PolyfuseError(
                f"params.{self.param}: template {self.text!r} names {exc}, which this segment lacks; "
                f"its fields are {', '.join(sorted(fields))} (text observations and info entries of its last step)"
            ) from None
        except ValueError as exc:  # a bad format spec or conversion, or !n on a non-number
            raise PolyfuseError(f"params.{self.param}: cannot fill template {self.text!r}: {exc}") from None


def resolve_action_names(action_names: Sequence[str] | None, env: str | None) -> ActionNames:
    """The judge's action names: listed in its params, or read from an environment."""
    if action_names is not None:
        return ActionNames(action_names)
    return ActionNames(env_action_names(env) if env else None)
