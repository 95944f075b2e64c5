"""The versioned JSON API (``/api/v1``): the same work as the pages, for scripts and other front ends.

Bearer tokens only (``Authorization: Bearer pf_...``). Every body and path parameter is validated:
wrong types, unknown fields and ids outside the token's project are 4xx answers that say what is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from polyfuse.feedback import MAX_SCALE, Label
from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyfuse_feedback.access import Principal
from polyfuse_feedback.annotation import AnnotationQueue, Progress
from polyfuse_feedback.app.presenting import CANT_TELL, CHOICES, present
from polyfuse_feedback.app.security import api_principal, require_admin, require_project
from polyfuse_feedback.store import LabelStore

router = APIRouter(tags=["annotation"])
ProjectName = Annotated[str, Field(min_length=1, max_length=255)]
QueryId = Annotated[int, Field(ge=1, le=2**62)]


def principal(request: Request) -> Principal:
    return api_principal(request.app.state.store, request)


Caller = Annotated[Principal, Depends(principal)]


def _store(request: Request) -> LabelStore:
    return request.app.state.store


def _queue(request: Request) -> AnnotationQueue:
    return request.app.state.queue


class AnswerIn(BaseModel):
    """One answer: ``answer`` for a comparison (or ``cant-tell``), ``rating`` for a rating query."""

    model_config = ConfigDict(extra="forbid")
    answer: Literal["left", "right", "tie", "cant-tell"] | None = Field(
        None, description="For a comparison: left (the first is better), right, tie, or cant-tell (abstain).")
    rating: int | None = Field(None, ge=1, le=MAX_SCALE, description="For a rating query: 1 (worst) to its scale.")
    key: str = Field(pattern=r"^[A-Za-z0-9_-]{8,100}$", description="Made by the client once per answer; a "
                     "retried request with the same key returns the first one's label instead of a second label.")

    @model_validator(mode="after")
    def _one_answer(self) -> AnswerIn:
        if (self.answer is None) == (self.rating is None):
            raise ValueError("give either answer (a comparison) or rating (a rating query)")
        return self

    def label(self) -> Label | None:
        if self.answer == CANT_TELL:
            return None
        if self.answer is not None:
            return Label(preference=CHOICES[self.answer])
        return Label(rating=self.rating)


class LabelOut(BaseModel):
    label_id: int


class ProjectOut(BaseModel):
    name: str
    open: int = Field(description="Queries waiting for a first answer from people.")


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(caller: Caller, request: Request) -> list[ProjectOut]:
    """The projects this token may annotate (every one for an admin)."""
    names = [p.name for p in _store(request).projects() if caller.may_use(p.name)]
    return [ProjectOut(name=name, open=_queue(request).remaining(name)) for name in names]


@router.get("/projects/{project}/next")
def next_query(project: ProjectName, caller: Caller, request: Request) -> dict[str, Any]:
    """Lease the most useful open query to the caller and show it; ``{"query": null}`` when none is waiting."""
    require_project(caller, project)
    assignment = _queue(request).next(caller, project)
    if assignment is None:
        return {"query": None, "open": 0}
    settings = _store(request).project_settings(project)
    shown = present(request.app.state.segments, settings, assignment)
    return {"query": shown, "open": _queue(request).remaining(project)}


@router.post("/projects/{project}/queries/{query_id}/labels", status_code=201, response_model=LabelOut)
def submit(project: ProjectName, query_id: QueryId, answer: AnswerIn, caller: Caller, request: Request) -> LabelOut:
    """Record the caller's answer; durable when this returns."""
    require_project(caller, project)
    return LabelOut(label_id=_queue(request).submit(caller, project, query_id, answer.label(), answer.key))


@router.post("/projects/{project}/queries/{query_id}/skip", status_code=204)
def skip(project: ProjectName, query_id: QueryId, caller: Caller, request: Request) -> Response:
    """Do not show this query to the caller again; others may answer it."""
    require_project(caller, project)
    _queue(request).skip(caller, project, query_id)
    return Response(status_code=204)


def progress_json(progress: Progress) -> dict[str, Any]:
    return {
        "queries": progress.queries, "open": progress.open, "answered": progress.answered,
        "annotators": [vars(a) for a in progress.annotators], "overlapping": progress.overlapping,
        "fleiss_kappa": progress.fleiss_kappa,
        "cohen_kappa": [{"annotators": list(pair), "kappa": kappa} for pair, kappa in progress.cohen_kappa.items()],
    }


@router.get("/projects/{project}/progress")
def project_progress(project: ProjectName, caller: Caller, request: Request) -> dict[str, Any]:
    """Admin: counts, labels per annotator, agreement, and the reward model's held-out accuracy over the run."""
    require_admin(caller)
    store = _store(request)
    if store.project_settings(project) is None:
        raise HTTPException(404, f"no project {project!r}")
    return {**progress_json(_queue(request).progress(project)),
            "heldout_accuracy": store.metric_history(project, "heldout_accuracy"),
            "labels_learnt": store.metric_history(project, "labels")}
