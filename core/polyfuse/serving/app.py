"""The inference server's HTTP API (FastAPI): ``POST /v1/act``, ``GET /health``, ``GET /metrics``.

A client mistake is a 4xx naming the field and what was expected (``detail.field``,
``detail.problem``); bodies over the size limit are refused before they are read whole.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from polyfuse.serving.batching import Batcher
from polyfuse.serving.inputs import InvalidInput, decode_request, parse_json
from polyfuse.serving.metrics import ServerMetrics
from polyfuse.serving.model import MAX_OBSERVATIONS, ServedModel

MAX_BODY_BYTES = 16 * 1024 * 1024


class BodySizeLimit:
    """ASGI middleware: a body past ``max_bytes`` (declared or streamed) is answered 413 without reading the rest."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": {"field": "body", "problem": f"larger than {self.max_bytes} bytes; send fewer "
                                                                  "observations per request"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(model: ServedModel, *, max_batch: int = 32, max_wait_s: float = 0.002,
               max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """The ASGI app serving ``model``; its inference thread starts with the app and stops with it."""
    metrics = ServerMetrics()
    state: dict[str, Batcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["batcher"] = Batcher(model, max_batch, max_wait_s, on_batch=metrics.batch)
        try:
            yield
        finally:
            state.pop("batcher").close()

    app = FastAPI(title="polyfuse serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics = metrics

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": {"field": exc.field, "problem": exc.problem}}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ready" if "batcher" in state else "starting", **model.describe()}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.prometheus(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/act")
    async def act(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            observations, single = decode_request(parse_json(await request.body()), model.observation_space,
                                                  model.keys, MAX_OBSERVATIONS)
        except InvalidInput as exc:
            metrics.request(exc.status, time.perf_counter() - started)
            raise
        answer = await state["batcher"].submit(observations)
        actions = [int(a) for a in answer.actions]
        probabilities = [[float(p) for p in row] for row in answer.probabilities]
        names = [model.action_names[a - model.action_start] for a in actions] if model.action_names else None
        if single:
            content: dict[str, Any] = {"action": actions[0], "probabilities": probabilities[0]}
            if names:
                content["action_name"] = names[0]
        else:
            content = {"actions": actions, "probabilities": probabilities}
            if names:
                content["action_names"] = names
        metrics.request(200, time.perf_counter() - started, len(actions))
        return JSONResponse({**content, "step": model.step})

    return BodySizeLimit(app, max_body_bytes)
