"""The labelled data a preference model trains on: segments by id, and one row per label.

Which labels are held out (to measure the model) and each label's bootstrap
weights (one per ensemble member) are drawn from the label's id and the
model's seed, so they are the same whenever the labels are read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from polyfuse.feedback import Label
from polyfuse.rewards import Segment


@dataclass(frozen=True)
class LabelRow:
    """One label: a comparison (``second`` set, ``preference``) or a rating (``rating`` on ``scale``)."""

    id: int
    first: int
    second: int | None
    preference: float | None
    rating: int | None
    scale: int
    weight: float
    heldout: bool
    bootstrap: np.ndarray


class LabelSet:
    """Labels and the segments they refer to, in arrival order."""

    def __init__(self, seed: int, members: int, heldout_fraction: float, bootstrap: bool = True) -> None:
        """``bootstrap`` false: every member weighs every label 1 (members differ by initialisation only)."""
        self.seed, self.members, self.heldout_fraction, self.bootstrap = seed, members, heldout_fraction, bootstrap
        self.segments: dict[int, Segment] = {}
        self.rows: list[LabelRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, label_id: int, first: tuple[int, Segment], second: tuple[int, Segment] | None, label: Label,
            scale: int, weight: float) -> None:
        for segment_id, segment in (first, second) if second is not None else (first,):
            self.segments.setdefault(segment_id, segment)
        rng = np.random.default_rng([self.seed, label_id])
        heldout = bool(rng.random() < self.heldout_fraction)
        bootstrap = rng.poisson(1.0, self.members).astype(np.float32)  # drawn either way: the stream stays the same
        if not self.bootstrap:
            bootstrap = np.ones(self.members, dtype=np.float32)
        self.rows.append(LabelRow(label_id, first[0], None if second is None else second[0], label.preference,
                                  label.rating, scale, weight * label.confidence, heldout, bootstrap))

    def split(self, heldout: bool) -> list[LabelRow]:
        return [row for row in self.rows if row.heldout == heldout]

    def scales(self) -> list[int]:
        return sorted({row.scale for row in self.rows if row.rating is not None})

    def segments_of(self, ids: Sequence[int]) -> list[Segment]:
        return [self.segments[i] for i in ids]
