"""Request bodies beyond a size are refused before the app sees them: 413, not memory spent."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_BODY_BYTES = 64 * 1024
BULK_BODY_BYTES = 32 * 1024 * 1024  # a training run posting segments, queries or labels in batches
BULK_PATHS = re.compile(r"^/api/v1/projects/[^/]+/(segments|queries|labels)$")


class BodySizeLimit:
    """ASGI middleware: reads a request's body up to the limit, answers 413 past it, else hands it on whole.

    The limit is ``max_bytes`` (an answer is a few dozen bytes), ``bulk_bytes`` on the paths where a
    training run posts batches (:data:`BULK_PATHS`).

    A declared ``Content-Length`` over the limit is refused without reading anything; a streamed body is
    refused as soon as it passes the limit. Bodies here are small (an answer is a few dozen bytes).
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES, bulk_bytes: int = BULK_BODY_BYTES) -> None:
        self.app, self.max_bytes, self.bulk_bytes = app, max_bytes, bulk_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.bulk_bytes if BULK_PATHS.match(scope.get("path", "")) else self.max_bytes
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
        body = json.dumps({"detail": f"the request body is larger than {limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
