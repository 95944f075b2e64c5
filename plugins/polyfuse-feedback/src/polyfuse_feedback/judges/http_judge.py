"""The ``http-judge``: a language (or vision-language) model behind an OpenAI-compatible chat-completions endpoint.

Works with any server that speaks ``POST /v1/chat/completions`` (llama.cpp's
``llama-server``, vLLM, Ollama, hosted APIs). The judge is slow and fallible
by nature, so it is ``asynchronous`` (asked from a background thread) and
never raises out of :meth:`HttpJudge.label`: a timeout, an HTTP error, a
refused connection or an unreadable answer is counted in :meth:`metrics` and
the query abstained on, after retries with exponential backoff (``Retry-After``
honoured on 429). Requests are spread by a client-side rate limit and run at
most ``max_concurrency`` at a time. Only the standard library is used.
"""

from __future__ import annotations

import email.utils
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError
from polyfuse.feedback import FeedbackSource, Label, Query, answer_problem
from polyfuse.rewards import Segment

from polyfuse_feedback.judges.answers import MalformedAnswer, parse_comparison, parse_rating
from polyfuse_feedback.judges.fields import Template, resolve_action_names, segment_fields
from polyfuse_feedback.judges.images import data_url, is_image

if TYPE_CHECKING:
    from polyfuse_feedback.judges.configs import HttpJudgeConfig

COUNTERS = ("answered", "abstained", "timeouts", "http_errors", "rate_limited", "connection_errors", "malformed",
            "retries", "errors")


class RateLimiter:
    """Spaces request starts at least ``60 / per_minute`` seconds apart, across threads."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.lock = threading.Lock()
        self.next_start = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


class Failure(Exception):
    """One failed attempt: ``kind`` is its counter, ``retry`` whether another attempt may succeed."""

    def __init__(self, kind: str, detail: str, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.retry, self.retry_after = kind, retry, retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's wait: seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):  # neither: wait the usual backoff
        return None


class HttpJudge(FeedbackSource):
    """Asks a chat model about each query, from a prompt template filled with the segments' text and images."""

    asynchronous = True

    def __init__(self, config: HttpJudgeConfig) -> None:
        self.config = config
        self.headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise PolyfuseError(f"http-judge: params.api_key_env names {config.api_key_env}, which is not set; "
                                    f"export {config.api_key_env}=<your key>, or remove api_key_env for a local server")
            self.headers["Authorization"] = f"Bearer {key}"
        self.names = resolve_action_names(config.action_names, config.env)
        self.segment = Template(config.segment, self.names, "segment") if config.segment else None
        self.limiter = RateLimiter(config.requests_per_minute)
        self.pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="http-judge")
        self.batch_size = config.max_concurrency  # one wave of requests per call: each answer is stored soon
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter({key: 0 for key in COUNTERS})
        self.warned: set[str] = set()

    # -- prompts ------------------------------------------------------------------------------------

    def describe(self, segment: Segment) -> str:
        """The segment in words: the ``segment`` template, or each text observation and the actions."""
        if self.segment is not None:
            return self.segment.render(segment)
        fields = segment_fields(segment, self.names)
        texts = [f"{key}: {fields[key]}" for key, value in segment.observations.items()
                 if isinstance(value, (tuple, list)) and key in fields]
        return "\n".join([*texts, f"actions: {fields['actions']}"])

    def images(self, segment: Segment) -> list[str]:
        keys = self.config.image_keys
        if keys is None:
            keys = [key for key, value in segment.observations.items() if is_image(value)]
        return [data_url(segment.observations[key][-1], self.config.min_image_size) for key in keys]

    def messages(self, query: Query) -> list[dict[str, Any]]:
        """The chat request's messages: the system prompt, then the question with its images."""
        config = self.config
        if query.is_comparison:
            text = config.comparison_prompt.format(first=self.describe(query.first), second=self.describe(query.second))
            segments = [("attempt A", query.first), ("attempt B", query.second)]
        else:
            text = config.rating_prompt.format(first=self.describe(query.first), scale=query.scale)
            segments = [("the attempt", query.first)]
        content: Any = text
        if config.vision:
            content = [{"type": "text", "text": text}]
            for name, segment in segments:
                for url in self.images(segment):
                    content += [{"type": "text", "text": f"Image of {name}:"},
                                {"type": "image_url", "image_url": {"url": url}}]
        return [{"role": "system", "content": config.system_prompt}, {"role": "user", "content": content}]

    # -- requests -----------------------------------------------------------------------------------

    def _post(self, body: bytes) -> str:
        """One attempt: the reply's text, or a :class:`Failure`."""
        self.limiter.wait()
        request = urllib.request.Request(self.config.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            if status == 429:
                raise Failure("rate_limited", "HTTP 429", True, retry_after_seconds(exc.headers.get("Retry-After")))
            raise Failure("http_errors", f"HTTP {status}", status >= 500 or status == 408) from None
        except TimeoutError:
            raise Failure("timeouts", f"no answer within {self.config.timeout_s} s", True) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise Failure("timeouts", f"no answer within {self.config.timeout_s} s", True) from None
            raise Failure("connection_errors", f"cannot reach {self.config.url}: {exc.reason}", True) from None
        except OSError as exc:  # reset connections, a server closing mid-answer
            raise Failure("connection_errors", f"{type(exc).__name__}: {exc}", True) from None
        try:
            return str(json.loads(payload)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise Failure("malformed", f"not a chat-completions response: {payload[:200]!r}", False) from None

    def _ask(self, query: Query) -> Label | None:
        """The query's label after at most ``retries`` further attempts; ``None`` on any failure."""
        config = self.config
        body = json.dumps({"model": config.model, "messages": self.messages(query), "max_tokens": config.max_tokens,
                           "temperature": config.temperature}).encode("utf-8")
        for attempt in range(config.retries + 1):
            try:
                reply = self._post(body)
                if query.is_comparison:
                    label = parse_comparison(reply, config.default_confidence)
                else:
                    label = parse_rating(reply, query.scale, config.default_confidence)
                problem = answer_problem(query, label) if label is not None else None
                if problem:
                    raise MalformedAnswer(problem)
                return label
            except MalformedAnswer as exc:
                self._count("malformed", str(exc))
                return None
            except Failure as failure:
                self._count(failure.kind, str(failure))
                if not failure.retry or attempt == config.retries:
                    return None
                wait = failure.retry_after if failure.retry_after is not None else config.backoff_s * 2 ** attempt
                self._count("retries")
                time.sleep(min(wait, config.max_backoff_s))
        return None

    def _answer(self, query: Query) -> Label | None:
        try:
            label = self._ask(query)
        except Exception as exc:  # noqa: BLE001 - a template or encoding bug must not end the run's labelling thread
            self._count("errors", f"{type(exc).__name__}: {exc}")
            label = None
        self._count("answered" if label is not None else "abstained")
        return label

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        return list(self.pool.map(self._answer, queries))

    # -- bookkeeping --------------------------------------------------------------------------------

    def _count(self, key: str, detail: str | None = None) -> None:
        with self.lock:
            self.counts[key] += 1
            first = detail is not None and key not in self.warned
            self.warned.add(key)
        if first:  # once per kind: a dead server would otherwise print on every query
            print(f"warning: http-judge ({key}): {detail}; such queries are abstained on and counted in "
                  f"reward/feedback/<source>/source/{key}", file=sys.stderr)

    def metrics(self) -> dict[str, float]:
        with self.lock:
            return {key: float(value) for key, value in self.counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.metrics()

    def load_state_dict(self, state: Any) -> None:
        with self.lock:
            self.counts = Counter({key: int(state.get(key, 0)) for key in COUNTERS})

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
