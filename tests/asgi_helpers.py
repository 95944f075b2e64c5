"""An ASGI app driven in this process, without a server: its lifespan, and one HTTP exchange at a time."""

from __future__ import annotations

import asyncio
from typing import Any


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
