"""Feedback sources: who answers a learned reward model's queries.

A reward model that learns from feedback (``preference-model`` in the
``polyfuse-feedback`` distribution) asks a feedback source about the policy's
behaviour. A :class:`Query` is either

- a *comparison* of two trajectory segments (``second`` set), answered with a
  preference: ``0`` (the first segment is better), ``1`` (the second) or
  ``0.5`` (a tie, "equally good"); or
- a *rating* of one segment (``second`` is ``None``, ``scale`` levels),
  answered with a rating from ``1`` (worst) to ``scale`` (best); a good/bad
  question is a rating on a scale of 2.

A source (a simulated annotator, an AI judge, a person behind a web app)
answers each query with a :class:`Label` carrying a confidence in ``[0, 1]``,
or with ``None`` to abstain ("can't tell", a judge that failed). Feedback
sources are registered with the ``register_feedback`` hook and named in a
reward's params as ``feedback: {name: ..., params: {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polyfuse.rewards import Segment

PREFERENCES = (0.0, 0.5, 1.0)
MAX_SCALE = 10


@dataclass(frozen=True)
class Query:
    """A question about the policy's behaviour; ``id`` is the asker's own key for it.

    With ``second`` set: which of the two segments is better? With ``second``
    ``None``: how good is ``first`` on a scale of ``1..scale``? ``priority``
    orders queries for sources that answer the most useful ones first (higher first).
    """

    first: Segment
    second: Segment | None = None
    id: int = 0
    scale: int = 0
    priority: float = 0.0

    def __post_init__(self) -> None:
        if self.second is None and not 2 <= self.scale <= MAX_SCALE:
            raise ValueError(f"a rating query needs a scale of 2 to {MAX_SCALE} levels, got {self.scale!r}")

    @property
    def is_comparison(self) -> bool:
        return self.second is not None


@dataclass(frozen=True)
class Label:
    """An answer to a :class:`Query`.

    For a comparison, ``preference`` is the probability-style target that the
    *second* segment is better: ``0.0`` (the first is), ``1.0`` (the second
    is), ``0.5`` (a tie). For a rating, ``rating`` is a whole number from ``1``
    to the query's ``scale``. ``confidence`` in ``[0, 1]`` says how sure the source is.
    """

    preference: float | None = None
    confidence: float = 1.0
    rating: int | None = None

    def __post_init__(self) -> None:
        if (self.preference is None) == (self.rating is None):
            raise ValueError("a label holds either a preference (comparison) or a rating, not both or neither")
        if self.preference is not None and self.preference not in PREFERENCES:
            raise ValueError(f"preference must be one of {PREFERENCES}, got {self.preference!r}")
        if self.rating is not None and (isinstance(self.rating, bool) or not isinstance(self.rating, int)
                                        or self.rating < 1):
            raise ValueError(f"rating must be a whole number from 1, got {self.rating!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")


def answer_problem(query: Query, label: Label) -> str | None:
    """Why ``label`` does not answer ``query`` (a rating for a comparison, a rating off the scale), or ``None``."""
    if query.is_comparison and label.preference is None:
        return f"query {query.id} compares two segments but the answer is a rating ({label.rating})"
    if not query.is_comparison:
        if label.rating is None:
            return f"query {query.id} asks for a rating but the answer is a preference ({label.preference})"
        if label.rating > query.scale:
            return f"query {query.id} asks for a rating from 1 to {query.scale}, the answer is {label.rating}"
    return None


class FeedbackSource:
    """Answers queries about the policy's behaviour; one :class:`Label` or ``None`` (abstain) per query.

    A source that answers slowly (a remote model, people) sets ``asynchronous = True``: the asker then
    calls :meth:`label` from a background thread and trains on the labels that have arrived, so
    training never waits for it. An instant source (a simulated annotator) is asked inline.
    ``batch_size`` is how many queries one :meth:`label` call gets; answers are stored when it
    returns, so a source answering one at a time (a person) sets 1 and no given answer waits on others.
    """

    asynchronous: bool = False
    batch_size: int = 32  # queries per label() call; answers are stored when the call returns (a person: 1)

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        """One answer per query, in order."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Counters worth plotting (errors, timeouts, abstentions...), logged as ``reward/feedback/<key>``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State saved in the asking reward's checkpoints (random streams, counters)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release connections or threads; called once when the run ends."""
