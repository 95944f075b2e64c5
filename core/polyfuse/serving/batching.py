"""Dynamic batching: requests that arrive together run as one forward pass on one inference thread.

Handlers put their batch (and the episode of each observation) on a queue and await a future; the
worker thread takes the first waiting request, then gathers more until ``max_batch`` observations or
``max_wait_s`` after the first, runs the model once on all of them and hands each request its rows. One thread owns the model, so torch is
never entered concurrently, and under load the per-call overhead is paid once per batch. A new model
(a hot reload) is swapped in on that thread between two batches: what was batched before the swap is
answered by the old model, everything after by the new one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polyfuse.observations import Batch, batch_length, concatenate

_STOP = object()


Model = Callable[[Batch, list[str | None]], Any]


@dataclass
class _Request:
    observations: Batch
    episodes: list[str | None]
    size: int
    future: Future = field(default_factory=Future)


@dataclass
class _Swap:
    model: Model


class Batcher:
    """Runs ``model(batch, episodes) -> answer`` (a dataclass of per-row arrays, a field None when the model has
    no such values; ``episodes``: each row's episode id, None where the client named none) for many requests
    on one thread.

    ``on_batch(size, seconds)`` is told each forward pass (metrics); ``on_swap(old, new)`` each swap, on the
    worker thread once the old model's last batch is answered (so it may close the old model).
    """

    def __init__(
        self, model: Model, max_batch: int, max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        on_swap: Callable[[Any, Any], None] | None = None,
    ) -> None:
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self.model, self.max_batch, self.max_wait_s = model, max_batch, max_wait_s
        self.on_batch, self.on_swap = on_batch, on_swap
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="polyfuse-inference", daemon=True)
        self._thread.start()

    async def submit(self, observations: Batch, episodes: list[str | None] | None = None) -> tuple[Any, Model]:
        """The answer for ``observations`` alone, computed in whatever batch the worker forms, and the model
        that gave it (which one, around a swap, is for the caller to tell its client)."""
        size = batch_length(observations)
        request = _Request(observations, list(episodes) if episodes is not None else [None] * size, size)
        self._queue.put(request)
        return await asyncio.wrap_future(request.future)

    def swap(self, model: Model) -> None:
        """Answer with ``model`` from the next batch on (requests queued before this call keep the old one)."""
        self._queue.put(_Swap(model))

    def close(self, timeout: float = 10.0) -> None:
        """Answer what is queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _work(self) -> None:
        pending: _Request | None = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is _STOP:
                return
            if isinstance(first, _Swap):
                self._swap(first.model)
                continue
            group, size = [first], first.size
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while size < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, _Swap) or size + item.size > self.max_batch:
                    pending = item  # it comes after this batch
                    break
                group.append(item)
                size += item.size
            self._run(group, size)
            if stop:
                return

    def _swap(self, model: Model) -> None:
        old, self.model = self.model, model
        if self.on_swap is not None:
            self.on_swap(old, model)

    def _run(self, group: list[_Request], size: int) -> None:
        started = time.perf_counter()
        try:
            batch = concatenate([r.observations for r in group]) if len(group) > 1 else group[0].observations
            answer = self.model(batch, [episode for request in group for episode in request.episodes])
        except Exception as exc:  # noqa: BLE001 (every waiting request learns of it; the worker carries on)
            for request in group:
                request.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(size, time.perf_counter() - started)
        start = 0
        for request in group:
            rows = slice(start, start + request.size)
            request.future.set_result((type(answer)(**{name: None if value is None else np.asarray(value)[rows]
                                                       for name, value in vars(answer).items()}), self.model))
            start += request.size
