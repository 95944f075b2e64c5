"""The serving app driven through ASGI in this process (no server, no trained run): what a failing model does."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("fastapi")

from polyfuse.serving.app import create_app  # after the skip: needs polyfuse[serve]
from polyfuse.serving.model import Answer


@dataclass
class Model:
    """What the app reads of a served model; ``fail`` makes its forward pass raise."""

    fail: bool = False
    location: Path = Path("run/checkpoint")
    step: int = 7
    keys: tuple[str, ...] = ("x",)
    observation_space: Any = field(default_factory=lambda: spaces.Dict({"x": spaces.Box(-1.0, 1.0, (2,), np.float32)}))
    action_names: Any = None
    action_start: int = 0

    def __call__(self, batch: dict) -> Answer:
        if self.fail:
            raise RuntimeError("the model's forward pass failed")
        rows = len(batch["x"])
        return Answer(np.zeros(rows, np.int64), np.full((rows, 2), 0.5, np.float32))

    def describe(self) -> dict[str, Any]:
        return {"step": self.step}

    def close(self) -> None:
        pass


async def request(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP exchange through ASGI: the status and the body answered (a 500 is answered, then raised)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except RuntimeError:
        pass  # Starlette answers 500 and re-raises for the server to log
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def serving(app: Any, exchanges: Any) -> Any:
    """Run ``exchanges(app)`` between the app's lifespan startup and shutdown."""
    events: asyncio.Queue[dict] = asyncio.Queue()
    said: list[str] = []

    async def send(message: dict) -> None:
        said.append(message["type"])

    await events.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, events.get, send))
    while "lifespan.startup.complete" not in said:
        assert not lifespan.done(), said
        await asyncio.sleep(0.01)
    try:
        return await exchanges(app)
    finally:
        await events.put({"type": "lifespan.shutdown"})
        await lifespan


def test_a_failing_model_is_a_500_counted_in_the_metrics() -> None:
    body = json.dumps({"observation": {"x": [0.0, 0.5]}}).encode()

    async def exchanges(app: Any) -> tuple[Any, ...]:
        answered = await request(app, "POST", "/v1/act", body)
        app_metrics = await request(app, "GET", "/metrics")
        return answered, app_metrics

    (status, _), (_, metrics) = asyncio.run(serving(create_app(Model(fail=True)), exchanges))
    assert status == 500
    assert 'polyfuse_requests_total{status="500"} 1' in metrics.decode()

    (status, answer), (_, metrics) = asyncio.run(serving(create_app(Model()), exchanges))
    assert status == 200 and json.loads(answer)["step"] == 7
    assert 'polyfuse_requests_total{status="200"} 1' in metrics.decode() and 'status="5' not in metrics.decode()
