"""Who answers which query, and where the answers are kept: feedback sources in front of the label store.

Every query goes into the label store before it is asked and every answer is
committed there when it arrives (an acknowledged label survives ``kill -9``).
With several sources, each with a ``share`` takes that share of a round's
queries, the ones the reward model is least sure of (highest priority); the
source without a share answers the rest. Each source's ``weight`` scales its
labels in the reward model's loss. Slow (asynchronous) sources are asked from
a background thread; :meth:`Router.collect` returns what has arrived.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polyfuse.feedback import FeedbackSource, Label, Query
from polyfuse.rewards import Segment

from polyfuse_feedback.asking import Asker
from polyfuse_feedback.human import StoreAnsweredSource
from polyfuse_feedback.store import LabelStore, NewQuery


CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Route:
    """A feedback source by name, the weight of its labels and the share of queries it takes (``None``: the rest)."""

    name: str
    source: FeedbackSource
    weight: float = 1.0
    share: float | None = None


@dataclass(frozen=True)
class Answer:
    """A stored label with its query rebuilt from the store, ready to train on."""

    label_id: int
    query: Query
    label: Label
    first_id: int
    second_id: int | None
    weight: float


class Router:
    """Sends queries to feedback sources through the label store and reads back the labels."""

    def __init__(self, store: LabelStore, project: str, routes: Sequence[Route],
                 display: Mapping[str, Any] | None = None) -> None:
        """``display``: how the annotation app shows this run's segments (:mod:`polyfuse_feedback.rendering`)."""
        self.store, self.project = store, project
        self.display = dict(display or {})
        self._started = False
        self.routes = list(routes)
        self.weights = {route.name: route.weight for route in self.routes}
        self.askers = {route.name: Asker(store, project, route.name, route.source) for route in self.routes}
        self.routed = {route.name: 0 for route in self.routes}  # queries sent to each source so far
        self.last_label_id = 0
        self._segment_ids: dict[int, tuple[weakref.ref[Segment], int]] = {}
        self._segments: dict[int, Segment] = {}

    # -- asking --------------------------------------------------------------------------------------

    def split(self, queries: Sequence[Query]) -> dict[str, list[Query]]:
        """Queries per source: the shared sources take the highest-priority ones first, in route order.

        Shares hold over the run, not per round: a round of 3 queries and a share of 0.1 gives the source
        none now and one a few rounds later, as the running total says.
        """
        remaining = sorted(queries, key=lambda q: -q.priority)
        total = sum(self.routed.values()) + len(queries)
        routed: dict[str, list[Query]] = {}
        for route in self.routes:
            if route.share is not None:
                take = min(max(0, round(route.share * total) - self.routed[route.name]), len(remaining))
                routed[route.name], remaining = remaining[:take], remaining[take:]
        default = next(route.name for route in self.routes if route.share is None)
        routed[default] = remaining
        for name, taken in routed.items():
            self.routed[name] += len(taken)
        return routed

    def start(self) -> None:
        """Describe the project for the app and tell people where to answer; once, before the first query."""
        if self._started:
            return
        self._started = True
        self.store.configure_project(self.project, display=self.display or None)
        for route in self.routes:
            if isinstance(route.source, StoreAnsweredSource):
                route.source.start(self.store, self.project)

    def ask(self, queries: Sequence[Query]) -> None:
        self.start()
        for name, routed in self.split(queries).items():
            if not routed:
                continue
            items = [NewQuery(self._stored(q.first), None if q.second is None else self._stored(q.second), q.scale,
                              q.priority, name) for q in routed]
            query_ids = self.store.post_queries(self.project, items)
            self.askers[name].ask(list(zip(query_ids, routed)))

    def _stored(self, segment: Segment) -> int:
        """The store's id of a segment, adding it the first time it is asked about."""
        known = self._segment_ids.get(id(segment))
        if known is not None and known[0]() is segment:
            return known[1]
        (segment_id,) = self.store.add_segments(self.project, [segment])
        self._segment_ids[id(segment)] = (weakref.ref(segment), segment_id)
        self._segments[segment_id] = segment
        return segment_id

    # -- answers -------------------------------------------------------------------------------------

    def collect(self) -> list[Answer]:
        """Labels stored since the last call (all of the project's on the first call: a resumed run keeps them)."""
        records = self.store.labels(self.project, after_id=self.last_label_id)
        if not records:
            return []
        self.last_label_id = records[-1].id
        missing = sorted({i for r in records for i in (r.first, r.second) if i is not None and i not in self._segments})
        self._segments.update(zip(missing, self.store.segments(missing)))
        answers = []
        for record in records:
            label = record.label
            assert label is not None  # abstentions are not listed
            second = None if record.second is None else self._segments[record.second]
            query = Query(self._segments[record.first], second, id=record.query_id, scale=record.scale)
            answers.append(Answer(record.id, query, label, record.first, record.second,
                                  self.weights.get(record.source, 1.0)))
        return answers

    def asked(self) -> int:
        """Queries posted in this project so far (whatever their state), so a resumed run keeps to its budget."""
        return sum(self.store.query_counts(self.project).values())

    # -- lifecycle -----------------------------------------------------------------------------------

    def resume(self) -> None:
        """Re-ask the queries a stopped run had posted but not had answered."""
        self.start()
        for asker in self.askers.values():
            asker.resume()

    def record(self, update: int, values: Mapping[str, float]) -> None:
        """Keep the reward model's figures after ``update`` in the store, where the admin page plots them."""
        self.store.record_metrics(self.project, update, values)

    def metrics(self) -> dict[str, float]:
        return {f"feedback/{name}/{key}": value for name, asker in self.askers.items()
                for key, value in asker.metrics().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"project": self.project, "routed": dict(self.routed),
                "sources": {route.name: route.source.state_dict() for route in self.routes}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved run's project (its output_dir may have moved since) and its shares."""
        self.project = str(state["project"])
        if self.store.app_url is not None:
            self.store.project = self.project
        for asker in self.askers.values():
            asker.project = self.project
        self.routed.update({name: int(count) for name, count in state["routed"].items() if name in self.routed})
        for route in self.routes:
            route.source.load_state_dict(state["sources"].get(route.name, {}))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop asking; a slow source's unanswered queries stay pending and are asked again on resume."""
        for asker in self.askers.values():
            asker.close(timeout)
        for route in self.routes:
            route.source.close()
        self.store.close()
