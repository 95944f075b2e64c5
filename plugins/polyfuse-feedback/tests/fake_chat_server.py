"""A loopback stand-in for an OpenAI-compatible chat-completions server, for the http-judge tests.

The request's ``model`` picks the behaviour: ``judge`` reads "answer: X
reference: Y" lines from the prompt and prefers the attempt whose answer
matches (``judge-json`` says so in JSON with a confidence); ``garbage``
answers nonsense; ``slow`` answers after ``SLOW_S``; ``error`` returns 500;
``busy`` returns 429 with ``Retry-After: 1`` to every other request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_S = 2.0
ATTEMPT = re.compile(r"answer: (\S+) reference: (\S+)")


def verdict(prompt: str, as_json: bool) -> str:
    """What a perfect judge says about the prompt's attempts."""
    correct = [answer == reference for answer, reference in ATTEMPT.findall(prompt)]
    if len(correct) == 1:
        rating = 2 if correct[0] else 1
        return json.dumps({"rating": rating, "confidence": 0.9}) if as_json else f"{rating}"
    if len(correct) != 2:
        return "can't tell"
    choice = "tie" if correct[0] == correct[1] else "A" if correct[0] else "B"
    return json.dumps({"choice": choice, "confidence": 0.9}) if as_json else f"**{choice}**"


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []  # each: time, body, headers
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/chat/completions"

    def __enter__(self) -> ChatServer:  # noqa: PYI034 - Self needs Python 3.11
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"time": time.monotonic(), "body": body, "headers": dict(self.headers)})
            count = len(self.server.requests)
        model = body["model"]
        if model == "error":
            return self._send(500, {"error": "boom"})
        if model == "busy" and count % 2 == 1:
            return self._send(429, {"error": "slow down"}, {"Retry-After": "1"})
        if model == "slow":
            time.sleep(SLOW_S)
        content = body["messages"][-1]["content"]
        prompt = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        reply = "I like turtles." if model == "garbage" else verdict(prompt, as_json=model == "judge-json")
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass
