"""Judges that score each segment on its own, then compare two scores or place one on a rating scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from polyfuse.feedback import FeedbackSource, Label, Query
from polyfuse.rewards import Segment


class ScoringJudge(FeedbackSource):
    """Scores every segment of a batch of queries in one call (one embedding or forward pass), then answers each.

    Subclasses give :meth:`scores` and the two ways to turn scores into an answer (``None``: abstain).
    """

    def __init__(self) -> None:
        self.counts = {"answered": 0, "abstained": 0}

    def scores(self, segments: Sequence[Segment]) -> np.ndarray:
        """One score per segment, higher is better."""
        raise NotImplementedError

    def compare(self, first: float, second: float) -> Label | None:
        raise NotImplementedError

    def rate(self, score: float, scale: int) -> Label | None:
        raise NotImplementedError

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        segments = [s for q in queries for s in (q.first, q.second) if s is not None]
        scores = iter(np.asarray(self.scores(segments), dtype=float).tolist() if segments else [])
        labels = []
        for query in queries:
            first = next(scores)
            label = self.compare(first, next(scores)) if query.is_comparison else self.rate(first, query.scale)
            self.counts["answered" if label is not None else "abstained"] += 1
            labels.append(label)
        return labels

    def metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.counts)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.counts = {key: int(state.get(key, 0)) for key in self.counts}
