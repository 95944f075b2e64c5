"""Asking a feedback source the store's queries, and recording its answers as they come.

An instant source (``asynchronous = False``, a simulated annotator) is asked inline. A slow one (an
AI judge behind a network, people) is asked by one background thread, in batches, highest priority
first, so training never waits: its labels reach the store when they arrive and the learner polls
:meth:`LabelStore.labels`. A source that raises, returns the wrong number of answers or answers
that do not fit their queries is counted in :meth:`Asker.metrics` and its queries are marked
``failed``; the run goes on. Queries still waiting when the run stops stay ``pending`` in the store
and :meth:`Asker.resume` asks them again after a restart.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
from collections.abc import Iterable, Sequence

from polyfuse.feedback import FeedbackSource, Label, Query, answer_problem

from polyfuse_feedback.human import StoreAnsweredSource
from polyfuse_feedback.store import LabelStore

log = logging.getLogger(__name__)
_STOP = (float("-inf"), -1, None)  # sorts before every query: the worker stops first


class Asker:
    """Asks ``source`` (registered as ``source_name``) the queries of ``project`` and records its labels.

    The store is shared safely: each of its calls checks out its own connection, so the worker
    thread never uses the caller's. The source itself is the caller's to close.
    """

    def __init__(self, store: LabelStore, project: str, source_name: str, source: FeedbackSource,
                 *, batch_size: int | None = None) -> None:
        batch_size = int(source.batch_size if batch_size is None else batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store, self.project, self.source_name, self.source = store, project, source_name, source
        self.batch_size = batch_size
        self.counts = {"asked": 0, "labelled": 0, "abstained": 0, "errors": 0, "invalid": 0, "failed": 0}
        self._lock = threading.Condition()
        self._outstanding = 0  # asked of the worker, not yet answered or failed
        self._order = itertools.count()
        self._waiting: queue.PriorityQueue = queue.PriorityQueue()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.in_store = isinstance(source, StoreAnsweredSource)  # people answer in the app, not through label()
        if source.asynchronous and not self.in_store:
            self._worker = threading.Thread(target=self._work, name=f"asker-{source_name}", daemon=True)
            self._worker.start()

    def ask(self, items: Iterable[tuple[int, Query]]) -> None:
        """Ask the queries (store query id, :class:`Query`); inline for an instant source, else in the background."""
        if self._closed:
            raise RuntimeError(f"the asker of {self.source_name!r} is closed: its queries would never be asked")
        items = [(int(query_id), dataclasses.replace(query, id=int(query_id))) for query_id, query in items]
        self._count(asked=len(items))
        if self.in_store:
            return
        if self._worker is None:
            for start in range(0, len(items), self.batch_size):
                self._label(items[start:start + self.batch_size])
            return
        self._count(outstanding=len(items))
        for query_id, query in items:
            self._waiting.put((-query.priority, next(self._order), (query_id, query)))

    def resume(self) -> int:
        """Ask again the pending queries this source was asked before a restart; how many."""
        ids = [q.id for q in self.store.pending(self.project, source=self.source_name)]
        if ids and not self.in_store:  # the app serves a store-answered source's pending queries as they are
            self.ask(zip(ids, self.store.queries(ids)))
        return len(ids)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every query asked so far is answered or failed; whether they were in time."""
        with self._lock:
            return self._lock.wait_for(lambda: self._outstanding == 0, timeout)

    def metrics(self) -> dict[str, float]:
        """This asker's counters, the queries still waiting (queued or being answered), and the source's own (under ``source/``)."""
        with self._lock:
            metrics = {key: float(value) for key, value in self.counts.items()}
            metrics["waiting"] = float(self._outstanding)
        if self.in_store:
            counts = self.store.query_counts(self.project, self.source_name)
            metrics.update(labelled=float(counts["answered"]), abstained=float(counts["abstained"]),
                           waiting=float(counts["pending"]))
        try:
            metrics.update({f"source/{key}": float(value) for key, value in self.source.metrics().items()})
        except Exception:  # a source's metrics are not worth a crashed run
            log.exception("feedback source %r failed to report its metrics", self.source_name)
        return metrics

    def close(self, timeout: float | None = None) -> bool:
        """Stop the worker after its current batch; queries not yet asked stay pending. Whether it stopped."""
        if self._worker is not None and not self._closed:
            self._waiting.put(_STOP)
        self._closed = True
        if self._worker is None:
            return True
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # -- the work -----------------------------------------------------------------------------------

    def _count(self, outstanding: int = 0, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self.counts[key] += delta
            self._outstanding += outstanding
            self._lock.notify_all()

    def _work(self) -> None:
        while True:
            entries = [self._waiting.get()]
            while len(entries) < self.batch_size and entries[-1] is not _STOP:
                try:
                    entries.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            batch = [entry[2] for entry in entries if entry is not _STOP]
            try:
                if batch:
                    self._label(batch)
            except Exception:  # the store failed: the queries stay pending for resume()
                self._count(errors=1)
                log.exception("recording labels from %r failed; its queries stay pending", self.source_name)
            finally:
                self._count(outstanding=-len(batch))
            if any(entry is _STOP for entry in entries):
                return

    def _label(self, batch: Sequence[tuple[int, Query]]) -> None:
        ids = [query_id for query_id, _ in batch]
        try:
            answers = list(self.source.label([query for _, query in batch]))
        except Exception as exc:  # noqa: BLE001 - a failing source must not stop the run
            log.warning("feedback source %r failed on %d queries: %r", self.source_name, len(batch), exc)
            self._count(errors=1, failed=len(batch))
            self.store.mark_failed(ids, f"{self.source_name} raised {exc!r}")
            return
        if len(answers) != len(batch):
            log.warning("feedback source %r answered %d queries with %d labels", self.source_name, len(batch),
                        len(answers))
            self._count(errors=1, failed=len(batch))
            self.store.mark_failed(ids, f"{self.source_name} answered {len(batch)} queries with {len(answers)} labels")
            return
        fitting = []
        for (query_id, query), answer in zip(batch, answers):
            problem = None
            if answer is not None:
                problem = (answer_problem(query, answer) if isinstance(answer, Label)
                           else f"the answer to query {query_id} is a {type(answer).__name__}, not a Label")
            if problem:
                self._count(invalid=1, failed=1)
                self.store.mark_failed([query_id], f"{self.source_name}: {problem}")
            else:
                fitting.append((query_id, answer))
        self.store.record_labels(fitting, source=self.source_name)
        abstained = sum(answer is None for _, answer in fitting)
        self._count(abstained=abstained, labelled=len(fitting) - abstained)
