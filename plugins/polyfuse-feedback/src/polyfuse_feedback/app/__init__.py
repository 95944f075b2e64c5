"""The annotation web app: people answer a training run's queries; admins watch progress and agreement.

FastAPI on uvicorn, server-rendered pages (Jinja2, autoescaped) with a little JavaScript for keyboard
shortcuts, and a versioned JSON API (``/api/v1``, its OpenAPI schema at ``/api/v1/openapi.json``).
Everything goes through the label store (:class:`polyfuse_feedback.store.LabelStore`): the SQLite
file a run writes, or a PostgreSQL database shared with runs elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from polyfuse.body_limit import BodySizeLimit
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyfuse_feedback.annotation import LEASE_S, AnnotationQueue, NotFound
from polyfuse_feedback.app.limits import BULK_BODY_BYTES, BULK_PATHS, MAX_BODY_BYTES
from polyfuse_feedback.app.presenting import RenderedSegments
from polyfuse_feedback.app.security import LoginRequired
from polyfuse_feedback.store import LabelStore, StoreError

HERE = Path(__file__).parent
log = logging.getLogger("polyfuse_feedback.app")
API_PREFIX = "/api/v1"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_app(database_url: str, *, lease_s: float = LEASE_S, source: str = "human") -> FastAPI:
    """The app over the label store at ``database_url`` (opened, and migrated, now)."""
    from polyfuse_feedback.app import api, pages, trainer_api

    store = LabelStore(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="polyfuse feedback", version="1", openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=f"{API_PREFIX}/docs", redoc_url=None, lifespan=lifespan,
                  description="Annotate a training run's queries; the run's reward model learns from the answers.")
    app.state.store = store
    app.state.queue = AnnotationQueue(store, source=source, lease_s=lease_s)
    app.state.segments = RenderedSegments(store)
    app.state.secret = store.app_secret  # CSRF tokens: the same in every worker and after a restart
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(trainer_api.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES, larger={BULK_PATHS: BULK_BODY_BYTES})

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException too; and unknown paths
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(API_PREFIX) or request.url.path == "/healthz":
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        return pages.render(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                            status_code=exc.status_code)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return await http_error(request, HTTPException(404, str(exc)))

    @app.exception_handler(StoreError)
    async def refused(request: Request, exc: StoreError) -> Response:
        return await http_error(request, HTTPException(422, str(exc)))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # logged before the answer goes out: a server killed right after still leaves the traceback
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error: the server's log has the traceback"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
        return await http_error(request, HTTPException(422, problems))

    return app
