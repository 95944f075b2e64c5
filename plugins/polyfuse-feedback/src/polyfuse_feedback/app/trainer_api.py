"""The API a training run uses when the annotation app, not a database it can reach, holds its label store.

Tokens with role ``trainer`` (``polyfuse feedback token NAME --project P --trainer``) or ``admin``. A run
pointed at the app (``store: {url: http://HOST:PORT, token: ...}``) posts its segments and queries here
and polls the labels people give (:class:`polyfuse_feedback.remote.RemoteLabelStore` is the client).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from polyfuse.feedback import MAX_SCALE, Label
from pydantic import BaseModel, ConfigDict, Field

from polyfuse_feedback.access import Principal
from polyfuse_feedback.app.security import api_principal
from polyfuse_feedback.store import LabelStore, NewQuery, StoreError
from polyfuse_feedback.wire import segment_from_json, segment_to_json

router = APIRouter(tags=["training runs"])
MAX_IDS = 10_000
MAX_ID = 2**62  # beyond any database's integers: a larger number is a 422, not an overflow
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def trainer(request: Request, project: str) -> Principal:
    principal = api_principal(request.app.state.store, request)
    if principal.role not in ("trainer", "admin") or not principal.may_use(project):
        raise HTTPException(403, f"this needs a trainer token for project {project!r} (polyfuse feedback token "
                            f"NAME --project {project} --trainer)")
    return principal


Trainer = Annotated[Principal, Depends(trainer)]


def _store(request: Request) -> LabelStore:
    return request.app.state.store


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentsIn(Strict):
    segments: list[dict[str, Any]] = Field(max_length=1000)


class QueryIn(Strict):
    first: Id
    second: Id | None = None
    scale: int = Field(0, ge=0, le=MAX_SCALE)
    priority: float = 0.0
    source: str = Field(max_length=255)


class QueriesIn(Strict):
    queries: list[QueryIn] = Field(max_length=10_000)


class FailedIn(Strict):
    ids: list[Id] = Field(max_length=MAX_IDS)
    error: str = Field(max_length=2000)


class AnswerIn(Strict):
    query_id: Id
    preference: Literal[0.0, 0.5, 1.0] | None = None
    rating: int | None = Field(None, ge=1, le=MAX_SCALE)
    confidence: float = Field(1.0, ge=0, le=1)
    abstain: bool = False


class LabelsIn(Strict):
    source: str = Field(max_length=255)
    answers: list[AnswerIn] = Field(max_length=10_000)


class SettingsIn(Strict):
    display: dict[str, Any] | None = None
    instructions: str | None = Field(None, max_length=2000)
    overlap: float | None = Field(None, ge=0, le=1)


class MetricsIn(Strict):
    step: int = Field(ge=0, le=MAX_ID)
    values: dict[str, float]


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise HTTPException(422, "ids must be comma-separated whole numbers") from None
    if len(ids) > MAX_IDS:
        raise HTTPException(422, f"at most {MAX_IDS} ids at once")
    if any(not 1 <= i <= MAX_ID for i in ids):
        raise HTTPException(422, f"ids are whole numbers from 1 to {MAX_ID}")
    return ids


def _own(store: LabelStore, project: str, kind: str, ids: list[int]) -> None:
    """404 unless every id belongs to ``project`` (a token sees its own project only)."""
    if ids and not store.belong(project, kind, ids):
        raise HTTPException(404, f"not every {kind} id given is in project {project!r}")


@router.post("/projects/{project}/segments", status_code=201)
def add_segments(project: str, body: SegmentsIn, caller: Trainer, request: Request) -> dict[str, list[int]]:
    """Store segments (the run's behaviour) for later queries; their ids, in order."""
    return {"ids": _store(request).add_segments(project, [segment_from_json(s) for s in body.segments])}


@router.get("/projects/{project}/segments")
def get_segments(project: str, caller: Trainer, request: Request,
                 ids: Annotated[str, Query(max_length=200_000)]) -> dict[str, list[dict[str, Any]]]:
    """Segments by id (comma-separated), in that order."""
    wanted = _ids(ids)
    _own(_store(request), project, "segments", wanted)
    return {"segments": [segment_to_json(s) for s in _store(request).segments(wanted)]}


@router.post("/projects/{project}/queries", status_code=201)
def post_queries(project: str, body: QueriesIn, caller: Trainer, request: Request) -> dict[str, list[int]]:
    """Post queries about stored segments, pending; their ids, in order."""
    items = [NewQuery(q.first, q.second, q.scale, q.priority, q.source) for q in body.queries]
    return {"ids": _store(request).post_queries(project, items)}


@router.get("/projects/{project}/queries/pending")
def pending(project: str, caller: Trainer, request: Request, source: str | None = None,
            limit: Annotated[int | None, Query(ge=1, le=MAX_IDS)] = None) -> dict[str, Any]:
    """Pending queries (of one source), highest priority first, then oldest."""
    return {"queries": [dataclasses.asdict(q) for q in _store(request).pending(project, source, limit)]}


@router.get("/projects/{project}/queries")
def get_queries(project: str, caller: Trainer, request: Request,
                ids: Annotated[str, Query(max_length=200_000)]) -> dict[str, Any]:
    """Queries by id (comma-separated), with their segments' ids, in that order."""
    wanted = _ids(ids)
    _own(_store(request), project, "queries", wanted)
    return {"queries": [dataclasses.asdict(q) for q in _store(request).stored_queries(wanted)]}


@router.post("/projects/{project}/queries/failed", status_code=204)
def mark_failed(project: str, body: FailedIn, caller: Trainer, request: Request) -> Response:
    """Mark pending queries failed, with the reason (a source that raised)."""
    _own(_store(request), project, "queries", body.ids)
    _store(request).mark_failed(body.ids, body.error)
    return Response(status_code=204)


@router.get("/projects/{project}/counts")
def counts(project: str, caller: Trainer, request: Request, source: str | None = None) -> dict[str, int]:
    """How many of the project's queries (of one source) are in each status."""
    return _store(request).query_counts(project, source)


@router.get("/projects/{project}/labels")
def get_labels(project: str, caller: Trainer, request: Request, after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """Labels with an id above ``after_id``, in id (commit) order: poll with the last id seen."""
    return {"labels": [dataclasses.asdict(r) for r in _store(request).labels(project, after_id, limit=limit)]}


@router.post("/projects/{project}/labels", status_code=201)
def record_labels(project: str, body: LabelsIn, caller: Trainer, request: Request) -> dict[str, list[int]]:
    """Record a machine source's answers (a judge's, a simulated annotator's) in one transaction."""
    store = _store(request)
    _own(store, project, "queries", [a.query_id for a in body.answers])
    try:
        answers = [(a.query_id, None if a.abstain else Label(preference=a.preference, rating=a.rating,
                                                               confidence=a.confidence)) for a in body.answers]
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    return {"ids": store.record_labels(answers, source=body.source)}


@router.put("/projects/{project}/settings", status_code=204)
def configure(project: str, body: SettingsIn, caller: Trainer, request: Request) -> Response:
    """How the app shows the project: observation kinds and action names, instructions, overlap."""
    _store(request).configure_project(project, display=body.display, instructions=body.instructions,
                                      overlap=body.overlap)
    return Response(status_code=204)


@router.post("/projects/{project}/metrics", status_code=204)
def record_metrics(project: str, body: MetricsIn, caller: Trainer, request: Request) -> Response:
    """The reward model's figures after an update, for the admin page's plot."""
    _store(request).record_metrics(project, body.step, body.values)
    return Response(status_code=204)
