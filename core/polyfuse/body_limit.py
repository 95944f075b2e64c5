"""Request bodies beyond a size are refused before an ASGI app sees them: 413, not memory spent.

One middleware for polyfuse's HTTP servers (``polyfuse serve``, the feedback plugin's annotation app);
each says its limits and how its 413 answer reads. A declared ``Content-Length`` over the limit is
refused without reading anything; a streamed body as soon as it passes the limit; a body within it is
read whole and handed on. Light: standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any


def plain_detail(limit: int) -> Any:
    """The default 413 ``detail``: a sentence."""
    return f"the request body is larger than {limit} bytes"


class BodySizeLimit:
    """ASGI middleware: bodies up to ``max_bytes`` pass (``larger``: path patterns with a limit of their own);
    past it the answer is 413 with ``{"detail": detail(limit)}``."""

    def __init__(self, app: Any, max_bytes: int, *, larger: Mapping[re.Pattern[str], int] | None = None,
                 detail: Callable[[int], Any] = plain_detail) -> None:
        self.app, self.max_bytes, self.larger, self.detail = app, max_bytes, dict(larger or {}), detail

    def limit(self, path: str) -> int:
        return next((limit for pattern, limit in self.larger.items() if pattern.match(path)), self.max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(send, limit)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to go away

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps({"detail": self.detail(limit)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
