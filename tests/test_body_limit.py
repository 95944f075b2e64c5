"""The body-size middleware both HTTP servers use: declared, streamed and per-path limits; the app's own 413 detail."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from polyfuse.body_limit import BodySizeLimit


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Answers 200 with the length of the body it read."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def call(app: Any, path: str, chunks: list[bytes], declared: int | None = None) -> tuple[int, Any, int]:
    """(status, answer, chunks read by the middleware) of a POST sending ``chunks``."""
    sent: list[dict] = []
    pending = list(chunks)

    async def receive() -> dict:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    asyncio.run(app({"type": "http", "path": path, "headers": headers}, receive, send))
    body = sent[1]["body"]
    answer = json.loads(body) if sent[0]["status"] == 413 else int(body)
    return sent[0]["status"], answer, len(chunks) - len(pending)


def test_within_the_limit_the_body_reaches_the_app_whole() -> None:
    assert call(BodySizeLimit(echo, 100), "/", [b"x" * 60, b"x" * 40]) == (200, 100, 2)


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    assert call(BodySizeLimit(echo, 100), "/", [b"x" * 10], declared=101) == (
        413, {"detail": "the request body is larger than 100 bytes"}, 0)
    assert call(BodySizeLimit(echo, 100), "/", [b"x"], declared=-1)[0] == 413  # not a length


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    status, _, read = call(BodySizeLimit(echo, 100), "/", [b"x" * 60] * 5)
    assert status == 413 and read == 2


def test_paths_with_a_limit_of_their_own_and_the_apps_detail() -> None:
    app = BodySizeLimit(echo, 10, larger={re.compile(r"^/bulk$"): 1000},
                        detail=lambda limit: {"field": "body", "problem": f"over {limit}"})
    assert call(app, "/bulk", [b"x" * 500])[:2] == (200, 500)
    assert call(app, "/bulk/other", [b"x" * 500])[:2] == (413, {"detail": {"field": "body", "problem": "over 10"}})
