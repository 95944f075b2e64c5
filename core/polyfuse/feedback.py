"""Feedback sources: who answers a learned reward model's queries.

A reward model that learns from feedback (``preference-model`` in the
``polyfuse-feedback`` distribution) shows a feedback source pairs of
trajectory segments and asks which is better. A source (a simulated
annotator, an AI judge, a person behind a web app) answers each
:class:`Query` with a :class:`Label` — preference ``0`` (the first segment is
better), ``1`` (the second) or ``0.5`` (a tie, "equally good") and a
confidence in ``[0, 1]`` — or ``None`` to abstain ("can't tell", a judge that
failed). Feedback sources are registered with the ``register_feedback`` hook
and named in a reward's params as ``feedback: {name: ..., params: {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polyfuse.rewards import Segment

PREFERENCES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class Query:
    """A pair of segments to compare; ``id`` is the asker's own key for the pair."""

    first: Segment
    second: Segment
    id: int = 0


@dataclass(frozen=True)
class Label:
    """An answer to a :class:`Query`.

    ``preference`` is the probability-style target that the *second* segment
    is better: ``0.0`` (the first is), ``1.0`` (the second is), ``0.5`` (a tie).
    ``confidence`` in ``[0, 1]`` says how sure the source is.
    """

    preference: float
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if self.preference not in PREFERENCES:
            raise ValueError(f"preference must be one of {PREFERENCES}, got {self.preference!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")


class FeedbackSource:
    """Answers queries about pairs of segments; one :class:`Label` or ``None`` (abstain) per query."""

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        """One answer per query, in order."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State saved in the asking reward's checkpoints (random streams, counters)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
