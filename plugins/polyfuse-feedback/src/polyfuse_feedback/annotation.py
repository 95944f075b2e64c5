"""Serving queries to people: the next query for an annotator, skips, answers, and a project's progress.

A query asked of people (its ``source`` is the run's human feedback source) is shown to one annotator
at a time: showing it takes a *lease* that expires after ``lease_s`` (a closed tab gives the query back).
A share of a project's queries (its ``overlap``) is shown to two annotators, so their agreement can be
measured; no query is shown twice to the same person, and a skipped one never again to them.
Queries are served highest priority first (the reward model's active selection sets priorities).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from polyfuse.feedback import Label

from polyfuse_feedback.access import Principal
from polyfuse_feedback.agreement import cohen_kappa, fleiss_kappa
from polyfuse_feedback.schema import labels, leases, projects, queries
from polyfuse_feedback.store import LabelStore, StoreError

LEASE_S = 600.0
LEASE_LOCK = 7102028  # PostgreSQL advisory lock key: one lease decision at a time
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,100}")
OVERLAP_BUCKETS = 1000


class NotFound(StoreError):
    """No such query in a project this annotator may see."""


@dataclass(frozen=True)
class Assignment:
    """A query leased to an annotator: ``second`` ``None`` asks for a rating on ``scale`` levels."""

    query_id: int
    first: int
    second: int | None
    scale: int
    priority: float
    expires_at: float


@dataclass(frozen=True)
class AnnotatorProgress:
    name: str
    labels: int
    abstentions: int
    last_label_at: float | None


@dataclass(frozen=True)
class Progress:
    """Where a project's human labelling stands."""

    queries: int
    open: int  # still wanting an answer
    answered: int
    annotators: list[AnnotatorProgress]
    overlapping: int  # queries answered by two or more people
    fleiss_kappa: float | None
    cohen_kappa: dict[tuple[str, str], float]


def _overlapping(overlap: sa.ColumnElement) -> sa.ColumnElement:
    """Whether a query is one of the project's share given to two people: a fixed spread of ids."""
    return (queries.c.id * 7919) % OVERLAP_BUCKETS < overlap * OVERLAP_BUCKETS


class AnnotationQueue:
    """Leases, skips and answers of one feedback source's queries (``source``: the name runs ask it by)."""

    def __init__(self, store: LabelStore, source: str = "human", lease_s: float = LEASE_S) -> None:
        self.store, self.source, self.lease_s = store, source, lease_s

    def next(self, principal: Principal, project: str) -> Assignment | None:
        """Lease the most useful open query of ``project`` to the annotator; ``None`` when there is none.

        A query the annotator already holds comes back (a reloaded page shows the same query). Queries
        nobody has answered come first, highest priority first; then, with an ``overlap``, second
        answers to the overlapping share. Each step walks the ``queries_by_status`` index in priority
        order and stops at the first query that fits, so serving stays fast with many queries waiting.
        """
        now, me = time.time(), principal.annotator_id
        held_by_others = (sa.select(sa.func.count()).select_from(leases)
                          .where(leases.c.query_id == queries.c.id, leases.c.annotator_id != me,
                                 leases.c.expires_at > now, leases.c.skipped.is_(False)).scalar_subquery())
        given = (sa.select(sa.func.count()).select_from(labels)
                 .where(labels.c.query_id == queries.c.id, labels.c.source == self.source).scalar_subquery())
        skipped_by_me = sa.exists().where(leases.c.query_id == queries.c.id, leases.c.annotator_id == me,
                                          leases.c.skipped.is_(True))
        answered_by_me = sa.exists().where(labels.c.query_id == queries.c.id, labels.c.annotator == principal.annotator,
                                           labels.c.source == self.source)
        columns = (queries.c.id, queries.c.first_id, queries.c.second_id, queries.c.scale, queries.c.priority)
        with self.store.writing() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": LEASE_LOCK})
            found = conn.execute(sa.select(projects.c.id, projects.c.overlap).where(projects.c.name == project)).one_or_none()
            if found is None:
                return None
            project_id, overlap = found
            # an answer deletes its lease in the same transaction: a live lease is never an answered query
            mine = (sa.select(*columns).join(leases, leases.c.query_id == queries.c.id)
                    .where(leases.c.annotator_id == me, leases.c.expires_at > now, leases.c.skipped.is_(False),
                           queries.c.project_id == project_id, queries.c.source == self.source,
                           queries.c.status != "failed")
                    .order_by(queries.c.priority.desc(), queries.c.id).limit(1))
            wanted = sa.case((_overlapping(sa.literal(overlap)), 2), else_=1)
            open_queries = (sa.select(*columns)
                            .where(queries.c.project_id == project_id, queries.c.status == "pending",
                                   queries.c.source == self.source, ~skipped_by_me, held_by_others < wanted)
                            .order_by(queries.c.priority.desc(), queries.c.id).limit(1))
            second_answers = (sa.select(*columns)
                              .where(queries.c.project_id == project_id, queries.c.status.in_(("answered", "abstained")),
                                     queries.c.source == self.source, _overlapping(sa.literal(overlap)),
                                     ~skipped_by_me, ~answered_by_me, given + held_by_others < 2)
                              .order_by(queries.c.priority.desc(), queries.c.id).limit(1))
            row = conn.execute(mine).one_or_none() or conn.execute(open_queries).one_or_none()
            if row is None and overlap > 0:
                row = conn.execute(second_answers).one_or_none()
            if row is None:
                return None
            expires = now + self.lease_s
            conn.execute(leases.delete().where(leases.c.query_id == row.id, leases.c.annotator_id == me))
            conn.execute(leases.insert().values(query_id=row.id, annotator_id=me, expires_at=expires, skipped=False))
        return Assignment(row.id, row.first_id, row.second_id, row.scale, row.priority, expires)

    def query(self, principal: Principal, project: str, query_id: int) -> Assignment:
        """A query of ``project`` by id, for showing it again; :class:`NotFound` outside the annotator's scope."""
        statement = (sa.select(queries.c.id, queries.c.first_id, queries.c.second_id, queries.c.scale,
                               queries.c.priority)
                     .join(projects, projects.c.id == queries.c.project_id)
                     .where(queries.c.id == query_id, projects.c.name == project, queries.c.source == self.source))
        with self.store.reading() as conn:
            row = conn.execute(statement).one_or_none()
        if row is None or not principal.may_use(project):
            raise NotFound(f"no query {query_id} in project {project!r}")
        return Assignment(row.id, row.first_id, row.second_id, row.scale, row.priority, 0.0)

    def skip(self, principal: Principal, project: str, query_id: int) -> None:
        """Never show ``query_id`` to this annotator again, and give it back to the others."""
        self.query(principal, project, query_id)
        with self.store.writing() as conn:
            conn.execute(leases.delete().where(leases.c.query_id == query_id,
                                               leases.c.annotator_id == principal.annotator_id))
            conn.execute(leases.insert().values(query_id=query_id, annotator_id=principal.annotator_id,
                                                expires_at=time.time(), skipped=True))

    def submit(self, principal: Principal, project: str, query_id: int, label: Label | None, key: str) -> int:
        """Record the annotator's answer (``None``: can't tell) durably; the label's id.

        ``key`` (8-100 of ``A-Za-z0-9_-``, made by the client per answer) makes a retried submission
        return the first one's id instead of a second label; it is scoped to the annotator.
        """
        if not KEY_PATTERN.fullmatch(key):
            raise StoreError("key must be 8 to 100 characters of A-Z, a-z, 0-9, '_' or '-'")
        self.query(principal, project, query_id)
        with self.store.writing() as conn:  # one transaction, one sync
            label_id = self.store.record_label_in(conn, query_id, label, self.source, principal.annotator,
                                                  f"{self.source}:{principal.annotator_id}:{key}")
            conn.execute(leases.delete().where(leases.c.query_id == query_id,
                                               leases.c.annotator_id == principal.annotator_id))
        return label_id

    def remaining(self, project: str) -> int:
        """Queries of ``project`` still wanting a first answer from people."""
        statement = (sa.select(sa.func.count()).select_from(queries)
                     .join(projects, projects.c.id == queries.c.project_id)
                     .where(projects.c.name == project, queries.c.source == self.source,
                            queries.c.status == "pending"))
        with self.store.reading() as conn:
            return int(conn.execute(statement).scalar_one())

    def progress(self, project: str) -> Progress:
        """Counts, labels per annotator and agreement (kappa over the queries two or more people answered)."""
        with self.store.reading() as conn:
            counts = dict(conn.execute(
                sa.select(queries.c.status, sa.func.count()).join(projects, projects.c.id == queries.c.project_id)
                .where(projects.c.name == project, queries.c.source == self.source).group_by(queries.c.status)).all())
            rows = conn.execute(
                sa.select(labels.c.query_id, labels.c.annotator, labels.c.preference, labels.c.rating,
                          labels.c.created_at)
                .join(queries, queries.c.id == labels.c.query_id).join(projects, projects.c.id == queries.c.project_id)
                .where(projects.c.name == project, labels.c.source == self.source).order_by(labels.c.id)).all()
        per_person: dict[str, list] = defaultdict(list)
        answers: dict[int, dict[str, str]] = defaultdict(dict)
        for query_id, person, preference, rating, created_at in rows:
            person = person or "?"
            per_person[person].append((preference, rating, created_at))
            answers[query_id][person] = ("none" if preference is None and rating is None
                                         else f"p{preference}" if preference is not None else f"r{rating}")
        people = [AnnotatorProgress(name, sum(p is not None or r is not None for p, r, _ in given),
                                    sum(p is None and r is None for p, r, _ in given), max(t for _, _, t in given))
                  for name, given in sorted(per_person.items())]
        shared = [by for by in answers.values() if len(by) >= 2]
        categories = sorted({answer for by in shared for answer in by.values()})
        fleiss = None
        two_raters = [by for by in shared if len(by) == 2]
        if two_raters and len(categories) > 1:
            fleiss = fleiss_kappa([[Counter(by.values())[c] for c in categories] for by in two_raters])
        pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for by in shared:
            names = sorted(by)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    pairs[(a, b)].append((by[a], by[b]))
        cohen = {pair: kappa for pair, given in pairs.items() if (kappa := cohen_kappa(given)) is not None}
        total = sum(counts.values())
        return Progress(total, counts.get("pending", 0), total - counts.get("pending", 0) - counts.get("failed", 0),
                        people, len(shared), fleiss, cohen)
