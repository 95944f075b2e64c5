"""A leased query as the app shows it, for pages and the JSON API alike."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from polyfuse_feedback.annotation import Assignment
from polyfuse_feedback.rendering import render_segment
from polyfuse_feedback.store import LabelStore, ProjectSettings

CHOICES = {"left": 0.0, "right": 1.0, "tie": 0.5}  # a comparison's answers as preferences for the second
CANT_TELL = "cant-tell"


class RenderedSegments:
    """Segments as shown, by id: rows never change, and one segment is often in several queries."""

    def __init__(self, store: LabelStore, size: int = 512) -> None:
        self.store, self.size = store, size
        self._shown: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ids: list[int], display: dict[str, Any]) -> list[dict[str, Any]]:
        fingerprint = json.dumps(display, sort_keys=True)
        with self._lock:  # what is cached now: another thread may evict it while this one renders
            found = {i: self._shown[(i, fingerprint)] for i in ids if (i, fingerprint) in self._shown}
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        if missing:
            found.update((i, render_segment(segment, display).as_json())
                         for i, segment in zip(missing, self.store.segments(missing)))
        with self._lock:
            for i in ids:
                self._shown[(i, fingerprint)] = found[i]
                self._shown.move_to_end((i, fingerprint))
            while len(self._shown) > self.size:
                self._shown.popitem(last=False)
        return [found[i] for i in ids]


def present(segments: RenderedSegments, settings: ProjectSettings, assignment: Assignment) -> dict[str, Any]:
    """Everything a person needs to answer the query: the instructions and each segment rendered."""
    ids = [assignment.first] + ([assignment.second] if assignment.second is not None else [])
    shown = segments.get(ids, settings.display)
    comparison = assignment.second is not None
    return {
        "id": assignment.query_id,
        "kind": "comparison" if comparison else "rating",
        "scale": assignment.scale,
        "priority": assignment.priority,
        "instructions": settings.instructions or ("Which of the two is better?" if comparison
                                                  else f"How good is this, from 1 to {assignment.scale}?"),
        "segments": shown,
        "answers": [*CHOICES, CANT_TELL] if comparison else [*(str(r) for r in range(1, assignment.scale + 1)),
                                                            CANT_TELL],
    }
