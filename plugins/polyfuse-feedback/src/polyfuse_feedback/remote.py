"""A training run's label store behind the annotation app's API, for a run on another machine than the app.

``store: {url: http://HOST:PORT, token: pf_...}`` in the preference model's params (or the token in
``POLYFUSE_FEEDBACK_TOKEN``, kept out of config files): the run posts its segments and queries to the app
and polls the labels people give there, through :mod:`polyfuse_feedback.app.trainer_api`. The token is a
trainer token of the run's project (``polyfuse feedback token NAME --project P --trainer`` where the app
runs). It offers the methods of :class:`polyfuse_feedback.store.LabelStore` that a run uses.

Requests are retried while the app cannot be reached (a restart) for up to ``retry_s``; a request the app
answered with an error is not retried, and its message is raised as a :class:`StoreError`.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from polyfuse.feedback import Label, Query
from polyfuse.rewards import Segment

from polyfuse_feedback.store import LabelRecord, NewQuery, StoredQuery, StoreError, queries_with_segments
from polyfuse_feedback.wire import segment_from_json, segment_to_json

TOKEN_VARIABLE = "POLYFUSE_FEEDBACK_TOKEN"
RETRY_S = 60.0
PAGE = 1000


class RemoteLabelStore:
    """The label store of one project, through the annotation app's API (see the module docstring)."""

    def __init__(self, url: str, project: str, token: str | None = None, *, timeout: float = 30.0,
                 retry_s: float = RETRY_S) -> None:
        """``project``: the run's project, the one its trainer token may use (methods given ids use it)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(f"{url!r} is not the address of the annotation app (http://HOST:PORT)")
        token = token or os.environ.get(TOKEN_VARIABLE)
        if not token:
            raise StoreError(f"a run using the annotation app at {url} needs a trainer token: set store.token or "
                             f"{TOKEN_VARIABLE} (polyfuse feedback token NAME --project PROJECT --trainer makes one)")
        self.url = self.app_url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        self.project = project
        self._parsed, self._token, self._timeout, self._retry_s = parsed, token, timeout, retry_s
        self._connection: http.client.HTTPConnection | None = None

    # -- HTTP ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        target = f"{self._parsed.path.rstrip('/')}/api/v1{path}"
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        deadline = time.monotonic() + self._retry_s
        while True:
            sent = False
            try:
                if self._connection is None:
                    secure = self._parsed.scheme == "https"
                    factory = http.client.HTTPSConnection if secure else http.client.HTTPConnection
                    self._connection = factory(self._parsed.hostname, self._parsed.port, timeout=self._timeout)
                self._connection.request(method, target, body=payload, headers=headers)
                sent = True
                response = self._connection.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._connection = None
                # a request the app may have acted on is not repeated, except those that are safe to repeat
                if (sent and method not in ("GET", "PUT")) or time.monotonic() > deadline:
                    raise StoreError(f"the annotation app at {self.url} did not answer {method} {path}: "
                                     f"{exc!r}") from None
                time.sleep(0.5)
        if response.status >= 400:
            try:
                detail = json.loads(data)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = data[:200].decode(errors="replace")
            raise StoreError(f"the annotation app at {self.url} refused {method} {path} ({response.status}): {detail}")
        return json.loads(data) if data else None

    def _project(self, project: str) -> str:
        return f"/projects/{urllib.parse.quote(project, safe='')}"

    # -- what a run uses ----------------------------------------------------------------------------

    def configure_project(self, name: str, *, display: Mapping[str, Any] | None = None,
                          instructions: str | None = None, overlap: float | None = None) -> None:
        self._request("PUT", f"{self._project(name)}/settings",
                      {"display": display, "instructions": instructions, "overlap": overlap})

    def add_segments(self, project: str, new: Iterable[Segment]) -> list[int]:
        return self._request("POST", f"{self._project(project)}/segments",
                             {"segments": [segment_to_json(s) for s in new]})["ids"]

    def segments(self, ids: Sequence[int]) -> list[Segment]:
        found: list[Segment] = []
        for start in range(0, len(ids), PAGE):
            part = ",".join(str(i) for i in ids[start:start + PAGE])
            page = self._request("GET", f"{self._project(self.project)}/segments", query={"ids": part})
            found += [segment_from_json(s) for s in page["segments"]]
        return found

    def post_queries(self, project: str, items: Iterable[NewQuery | tuple]) -> list[int]:
        queries = [NewQuery(*item)._asdict() for item in items]
        return self._request("POST", f"{self._project(project)}/queries", {"queries": queries})["ids"]

    def pending(self, project: str, source: str | None = None, limit: int | None = None) -> list[StoredQuery]:
        rows = self._request("GET", f"{self._project(project)}/queries/pending",
                             query={"source": source, "limit": limit})
        return [StoredQuery(**row) for row in rows["queries"]]

    def stored_queries(self, ids: Sequence[int]) -> list[StoredQuery]:
        rows = self._request("GET", f"{self._project(self.project)}/queries",
                             query={"ids": ",".join(str(i) for i in ids)})
        return [StoredQuery(**row) for row in rows["queries"]]

    def queries(self, ids: Sequence[int]) -> list[Query]:
        return queries_with_segments(self, ids)

    def mark_failed(self, query_ids: Sequence[int], error: str) -> None:
        self._request("POST", f"{self._project(self.project)}/queries/failed",
                      {"ids": list(query_ids), "error": error[:2000]})

    def record_labels(self, answers: Iterable[tuple[int, Label | None]], *, source: str,
                      annotator: str | None = None) -> list[int]:
        body = [{"query_id": query_id, "abstain": label is None,
                 **({} if label is None else {"preference": label.preference, "rating": label.rating,
                                              "confidence": label.confidence})} for query_id, label in answers]
        return self._request("POST", f"{self._project(self.project)}/labels",
                             {"source": source, "answers": body})["ids"]

    def labels(self, project: str, after_id: int = 0, *, limit: int | None = None) -> list[LabelRecord]:
        found: list[LabelRecord] = []
        while limit is None or len(found) < limit:
            page = self._request("GET", f"{self._project(project)}/labels",
                                 query={"after_id": after_id, "limit": PAGE})
            found += [LabelRecord(**row) for row in page["labels"]]
            if len(page["labels"]) < PAGE:
                break
            after_id = found[-1].id
        return found[:limit] if limit is not None else found

    def query_counts(self, project: str, source: str | None = None) -> dict[str, int]:
        return self._request("GET", f"{self._project(project)}/counts", query={"source": source})

    def record_metrics(self, project: str, step: int, values: Mapping[str, float]) -> None:
        self._request("POST", f"{self._project(project)}/metrics", {"step": int(step), "values": dict(values)})

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
