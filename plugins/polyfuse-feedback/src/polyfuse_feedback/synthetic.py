"""The ``synthetic`` feedback source: a simulated annotator that compares the segments' true returns.

It abstains on a segment whose rewards are unknown (NaN: a served episode whose client reported no
reward), rather than guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from polyfuse.feedback import FeedbackSource, Label, Query

if TYPE_CHECKING:
    from polyfuse_feedback.plugin import SyntheticConfig


def preference_probability(first_return: float, second_return: float, temperature: float) -> float:
    """P(the second segment is preferred) for a Boltzmann-rational annotator."""
    difference = second_return - first_return
    if temperature == 0:
        return 1.0 if difference > 0 else 0.0 if difference < 0 else 0.5
    return float(1.0 / (1.0 + np.exp(-np.clip(difference / temperature, -60, 60))))


def _rewards_known(query: Query) -> bool:
    segments = (query.first,) if query.second is None else (query.first, query.second)
    return all(np.isfinite(np.asarray(s.env_rewards, dtype=float)).all() for s in segments)


class SyntheticAnnotator(FeedbackSource):
    """Prefers the segment with the higher sum of environment rewards, Boltzmann-rationally, with mistakes."""

    def __init__(self, config: SyntheticConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.answered = 0

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        self.answered += len(queries)
        return [None if not _rewards_known(query) else self._compare(query) if query.second is not None
                else self._rate(query) for query in queries]

    def _compare(self, query: Query) -> Label:
        assert query.second is not None
        first = float(np.sum(query.first.env_rewards))
        second = float(np.sum(query.second.env_rewards))
        if abs(second - first) <= self.config.tie_margin:
            return Label(0.5, 1.0)
        p = preference_probability(first, second, self.config.temperature)
        preference = float(self.rng.random() < p)
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            preference = 1.0 - preference
        return Label(preference, max(p, 1.0 - p))

    def _rate(self, query: Query) -> Label:
        """The return placed on the scale across ``rating_range``, blurred by logistic noise of the temperature."""
        value = float(np.sum(query.first.env_rewards))
        if self.config.temperature:
            value += float(self.rng.logistic(0.0, self.config.temperature))
        low, high = self.config.rating_range
        position = float(np.clip((value - low) / (high - low), 0.0, 1.0))
        rating = 1 + int(round(position * (query.scale - 1)))
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            rating = int(self.rng.integers(1, query.scale + 1))
        return Label(rating=rating)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": json.dumps(self.rng.bit_generator.state), "answered": self.answered}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.answered = int(state["answered"])
