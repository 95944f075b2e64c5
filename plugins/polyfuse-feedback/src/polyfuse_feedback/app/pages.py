"""The pages people use: log in, annotate (one query at a time, keyboard shortcuts), and the admin view."""

from __future__ import annotations

import datetime
import io
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from polyfuse.feedback import Label

from polyfuse_feedback.access import Principal, authenticate
from polyfuse_feedback.annotation import AnnotationQueue
from polyfuse_feedback.app.presenting import CANT_TELL, CHOICES, present
from polyfuse_feedback.app.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    check_login_csrf,
    csrf_token,
    new_login_csrf,
    page_principal,
    require_admin,
    require_project,
)
from polyfuse_feedback.store import LabelStore

router = APIRouter(include_in_schema=False)
templates = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                        autoescape=select_autoescape(default=True, default_for_string=True))
Text = Annotated[str, Form(max_length=4096)]
templates.filters["timestamp"] = lambda seconds: (
    "" if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    html = templates.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _store(request: Request) -> LabelStore:
    return request.app.state.store


def _queue(request: Request) -> AnnotationQueue:
    return request.app.state.queue


def _session(request: Request) -> Principal:
    return page_principal(_store(request), request)


@router.get("/healthz")
def health(request: Request) -> dict[str, str]:
    _store(request).projects()  # the database answers
    return {"status": "ok"}


@router.get("/login")
def login_form(request: Request, error: str | None = None) -> HTMLResponse:
    token = new_login_csrf()
    response = render(request, "login.html", {"csrf": token, "error": error})
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict")
    return response


@router.post("/login")
def login(request: Request, token: Text, csrf: Text) -> Response:
    check_login_csrf(request, csrf)
    if authenticate(_store(request), token.strip()) is None:
        return render(request, "login.html", {"csrf": request.cookies.get(LOGIN_CSRF_COOKIE, ""),
                                              "error": "That token is not valid (mistyped, or revoked)."},
                      status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict")
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Text) -> Response:
    check_csrf(request.app.state.secret, _session(request), csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def home(request: Request) -> Response:
    me = _session(request)
    names = [p.name for p in _store(request).projects() if me.may_use(p.name)]
    if len(names) == 1 and not me.is_admin:
        return RedirectResponse(f"/projects/{names[0]}", status_code=303)
    projects = [{"name": name, "open": _queue(request).remaining(name)} for name in names]
    return render(request, "home.html", {"me": me, "projects": projects,
                                         "csrf": csrf_token(request.app.state.secret, me)})


@router.get("/projects/{project}")
def annotate(request: Request, project: str) -> HTMLResponse:
    me = _session(request)
    require_project(me, project)
    settings = _store(request).project_settings(project)
    if settings is None:
        raise HTTPException(404, f"no project {project!r}")
    assignment = _queue(request).next(me, project)
    query = present(request.app.state.segments, settings, assignment) if assignment is not None else None
    answered = sum(a.labels + a.abstentions for a in _queue(request).progress(project).annotators
                   if a.name == me.annotator)
    return render(request, "annotate.html", {
        "me": me, "project": project, "query": query, "key": uuid.uuid4().hex, "answered": answered,
        "open": _queue(request).remaining(project), "csrf": csrf_token(request.app.state.secret, me)})


@router.post("/projects/{project}/queries/{query_id}/answer")
def answer(request: Request, project: str, query_id: int, csrf: Text, key: Text,
           choice: Annotated[str, Form(max_length=16)]) -> Response:
    me = _session(request)
    check_csrf(request.app.state.secret, me, csrf)
    require_project(me, project)
    _queue(request).submit(me, project, query_id, _label(choice), key)
    return RedirectResponse(f"/projects/{project}", status_code=303)


def _label(choice: str) -> Label | None:
    if choice == CANT_TELL:
        return None
    if choice in CHOICES:
        return Label(preference=CHOICES[choice])
    if choice.isdigit() and 1 <= int(choice) <= 10:
        return Label(rating=int(choice))
    raise HTTPException(422, f"choice must be left, right, tie, {CANT_TELL} or a rating 1-10, got {choice!r}")


@router.post("/projects/{project}/queries/{query_id}/skip")
def skip(request: Request, project: str, query_id: int, csrf: Text) -> Response:
    me = _session(request)
    check_csrf(request.app.state.secret, me, csrf)
    require_project(me, project)
    _queue(request).skip(me, project, query_id)
    return RedirectResponse(f"/projects/{project}", status_code=303)


@router.get("/admin")
def admin(request: Request) -> HTMLResponse:
    me = _session(request)
    require_admin(me)
    store = _store(request)
    projects = []
    for info in store.projects():
        latest = {name: store.metric_history(info.name, name) for name in PLOTTED}
        projects.append({"info": info, "progress": _queue(request).progress(info.name),
                         "accuracy": latest["heldout_accuracy"][-1][1] if latest["heldout_accuracy"] else None,
                         "policy_return": (latest["segment_env_return"][-1][1] if latest["segment_env_return"]
                                           else None),
                         "has_plot": any(latest.values())})
    return render(request, "admin.html", {"me": me, "projects": projects,
                                          "csrf": csrf_token(request.app.state.secret, me)})


@router.get("/admin/projects/{project}/progress.png")
def progress_plot(request: Request, project: str) -> Response:
    me = _session(request)
    require_admin(me)
    store = _store(request)
    series = {name: store.metric_history(project, name) for name in PLOTTED}
    if not any(series.values()):
        raise HTTPException(404, f"no reward-model figures for project {project!r} yet")
    return Response(_plot(project, series), media_type="image/png", headers={"Cache-Control": "no-store"})


PLOTTED = ("heldout_accuracy", "labels", "segment_env_return")


def _plot(project: str, series: dict[str, list[tuple[int, float]]]) -> bytes:
    """The reward model's held-out accuracy and the labels it learnt from; the policy's return below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.6), dpi=100)
    model, policy = figure.subplots(2, 1, sharex=True)
    if series["heldout_accuracy"]:
        model.plot(*zip(*series["heldout_accuracy"]), marker="o", color="tab:blue", label="held-out pairwise accuracy")
    model.set_ylim(0, 1)
    model.set_ylabel("reward model")
    model.set_title(project)
    if series["labels"]:
        twin = model.twinx()
        twin.plot(*zip(*series["labels"]), color="tab:gray", linestyle="--", label="labels learnt from")
        twin.set_ylabel("labels")
        twin.legend(loc="lower right", fontsize=8)
    model.legend(loc="upper left", fontsize=8)
    if series["segment_env_return"]:
        policy.plot(*zip(*series["segment_env_return"]), color="tab:green",
                    label="policy: mean environment return of its recent episodes")
        policy.legend(loc="upper left", fontsize=8)
    policy.set_ylabel("policy")
    policy.set_xlabel("reward-model update")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
