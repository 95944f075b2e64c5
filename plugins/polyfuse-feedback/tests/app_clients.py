"""Annotators over real HTTP (stdlib only), for the kill test and the latency benchmark: each holds one
keep-alive connection, fetches the next query, answers it with a fresh idempotency key, and retries the
same request (same key) when the server is gone, until it answers."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(database_url, port, *options):
    """``polyfuse feedback serve`` in its own process; returns it once /healthz answers.

    Everything it prints (the access log included) goes to the file ``process.log_path``.
    """
    log = tempfile.NamedTemporaryFile("w+b", prefix="polyfuse-app-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "polyfuse", "feedback", "serve", "--db", database_url,
                                "--port", str(port), *options], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    process.log_path = log.name
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {open(process.log_path, errors='replace').read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not answer /healthz within 60 s")


def kill(process):
    """SIGKILL the server and any worker processes it started (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class Annotator:
    """One person's client: ``cycle()`` fetches a query and answers it; timings per request kind."""

    def __init__(self, port, token, project="run", retry_for_s=60.0, think_s=0.0):
        """``think_s``: seconds between seeing a query and answering it (a person looking at it)."""
        self.port, self.project, self.retry_for_s, self.think_s = port, project, retry_for_s, think_s
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.connection = None
        self.acknowledged = []  # (key, label_id)
        self.timings = {"next": [], "submit": []}

    def _request(self, kind, method, path, body=None):
        """The response's (status, JSON); retries on a dead connection until ``retry_for_s`` has passed."""
        deadline = time.monotonic() + self.retry_for_s
        fresh = self.connection is None
        while True:
            try:
                if self.connection is None:
                    fresh = True
                    self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                started = time.perf_counter()
                self.connection.request(method, path, body=None if body is None else json.dumps(body),
                                        headers=self.headers)
                response = self.connection.getresponse()
                payload = response.read()
                self.timings[kind].append(time.perf_counter() - started)
                try:
                    return response.status, json.loads(payload) if payload else None
                except ValueError:
                    raise AssertionError(f"{method} {path} answered {response.status}: {payload[:300]!r}") from None
            except (OSError, http.client.HTTPException):
                self.connection = None
                if fresh and time.monotonic() > deadline:  # a kept-alive connection may be stale: one more try
                    raise
                time.sleep(0.05)

    def cycle(self):
        """Answer one query; False when none is waiting."""
        status, shown = self._request("next", "GET", f"/api/v1/projects/{self.project}/next")
        assert status == 200, shown
        if shown["query"] is None:
            return False
        query = shown["query"]
        key = uuid.uuid4().hex
        time.sleep(self.think_s)
        answer = {"answer": "left"} if query["kind"] == "comparison" else {"rating": 1}
        status, result = self._request("submit", "POST",
                                       f"/api/v1/projects/{self.project}/queries/{query['id']}/labels",
                                       {**answer, "key": key})
        assert status == 201, result
        self.acknowledged.append((key, result["label_id"]))
        return True
