"""The Asker: instant sources inline, slow ones in the background, failing ones counted, never crashing."""

import threading

import numpy as np
import pytest
from polyfuse.feedback import FeedbackSource, Label
from polyfuse.rewards import Segment
from polyfuse_feedback.asking import Asker
from polyfuse_feedback.store import LabelStore


def segment(reward):
    return Segment({"x": np.full((2, 3), reward, dtype=np.float32), "text": ("a", "b")}, np.array([0, 1]),
                   np.array([reward, reward], dtype=np.float32), [{}, {}], False, False, 0)


class Instant(FeedbackSource):
    """Prefers the higher return; rates by return."""

    def __init__(self):
        self.threads = set()

    def label(self, queries):
        self.threads.add(threading.current_thread().name)
        return [Label(rating=min(q.scale, 1 + int(q.first.env_rewards.sum()))) if q.second is None
                else Label(preference=float(q.second.env_rewards.sum() > q.first.env_rewards.sum()))
                for q in queries]


class Gated(Instant):
    """Answers only when the test opens the gate: a person behind a web app."""

    asynchronous = True

    def __init__(self):
        super().__init__()
        self.entered, self.gate, self.batches = threading.Event(), threading.Event(), []

    def label(self, queries):
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append([q.id for q in queries])
        return super().label(queries)


class Raising(FeedbackSource):
    def __init__(self, asynchronous):
        self.asynchronous = asynchronous

    def label(self, queries):
        raise ConnectionError("the judge's server is down")

    def metrics(self):
        return {"timeouts": 3.0}


class Wrong(FeedbackSource):
    """Answers every query with a rating of 2: right for a rating query of scale >= 2, wrong for a comparison."""

    def __init__(self, asynchronous, extra=0):
        self.asynchronous, self.extra = asynchronous, extra

    def label(self, queries):
        return [Label(rating=2) for _ in queries] + [None] * self.extra


@pytest.fixture
def store(tmp_path):
    return LabelStore.in_run(tmp_path)


def post(store, source, comparisons=4, ratings=2):
    ids = store.add_segments("run", [segment(0.0), segment(1.0)])
    items = [(ids[0], ids[1], 0, float(n), source) for n in range(comparisons)]
    items += [(ids[1], None, 5, 0.0, source) for _ in range(ratings)]
    query_ids = store.post_queries("run", items)
    return list(zip(query_ids, store.queries(query_ids)))


def test_an_instant_source_is_asked_inline(store):
    source = Instant()
    asker = Asker(store, "run", "synthetic", source, batch_size=4)
    asker.ask(post(store, "synthetic"))
    records = store.labels("run")
    assert [(r.preference, r.rating, r.source) for r in records] == [(1.0, None, "synthetic")] * 4 + [
        (None, 3, "synthetic")] * 2
    assert source.threads == {threading.current_thread().name}
    assert asker.metrics() == {"asked": 6.0, "labelled": 6.0, "abstained": 0.0, "errors": 0.0, "invalid": 0.0,
                               "failed": 0.0, "waiting": 0.0}
    assert asker.wait(0) and asker.close()


def test_a_slow_source_is_asked_in_the_background_highest_priority_first(store):
    source = Gated()
    asker = Asker(store, "run", "people", source, batch_size=2)
    asked = post(store, "people", comparisons=5, ratings=0)  # priorities 0..4
    asker.ask(asked[:1])  # returns although the source has answered nothing
    assert source.entered.wait(30)
    asker.ask(asked[1:])  # queued while the worker waits for an answer
    assert store.labels("run") == [] and asker.metrics()["waiting"] == 5.0
    source.gate.set()
    assert asker.wait(30)
    assert len(store.labels("run")) == 5 and asker.metrics()["labelled"] == 5.0
    ids = [query_id for query_id, _ in asked]
    assert source.batches == [[ids[0]], [ids[4], ids[3]], [ids[2], ids[1]]]
    assert source.threads == {"asker-people"}
    assert asker.close(30)


def test_closing_leaves_unasked_queries_pending_and_resume_asks_them_again(store):
    source = Gated()
    asker = Asker(store, "run", "judge", source, batch_size=2)
    asked = post(store, "judge", comparisons=6, ratings=0)
    asker.ask(asked)
    assert source.entered.wait(30)  # the worker is answering its first batch
    assert not asker.close(0.05)  # it cannot stop mid-batch...
    source.gate.set()
    assert asker.close(30)  # ...and stops right after it
    assert len(store.labels("run")) == 2
    pending = store.pending("run", source="judge")
    assert len(pending) == 4

    with pytest.raises(RuntimeError, match="closed"):
        asker.ask(asked)
    restarted = Asker(store, "run", "judge", Instant())
    assert restarted.resume() == 4
    assert store.pending("run") == [] and len(store.labels("run")) == 6
    assert len({r.query_id for r in store.labels("run")}) == 6


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_raising_source_is_counted_and_its_queries_fail(store, asynchronous):
    asker = Asker(store, "run", "judge", Raising(asynchronous), batch_size=4)
    asked = post(store, "judge")
    asker.ask(asked)
    assert asker.wait(30)
    metrics = asker.metrics()
    assert (metrics["errors"], metrics["failed"], metrics["labelled"], metrics["source/timeouts"]) == (2, 6, 0, 3)
    assert set(store.status([q for q, _ in asked]).values()) == {"failed"}
    assert asker.close(30)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_answers_that_do_not_fit_are_invalid_and_the_rest_recorded(store, asynchronous):
    asker = Asker(store, "run", "judge", Wrong(asynchronous), batch_size=8)
    asked = post(store, "judge", comparisons=3, ratings=2)
    asker.ask(asked)
    assert asker.wait(30)
    metrics = asker.metrics()
    assert (metrics["invalid"], metrics["failed"], metrics["labelled"], metrics["errors"]) == (3, 3, 2, 0)
    assert [r.rating for r in store.labels("run")] == [2, 2]
    assert list(store.status([q for q, _ in asked]).values()).count("failed") == 3
    assert asker.close(30)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_wrong_number_of_answers_fails_the_batch(store, asynchronous):
    asker = Asker(store, "run", "judge", Wrong(asynchronous, extra=1), batch_size=8)
    asked = post(store, "judge", comparisons=0, ratings=3)
    asker.ask(asked)
    assert asker.wait(30)
    assert (asker.metrics()["errors"], asker.metrics()["failed"]) == (1, 3)
    assert store.labels("run") == []
    assert asker.close(30)


def test_abstentions_are_recorded(store):
    class Abstaining(FeedbackSource):
        def label(self, queries):
            return [None] * len(queries)

    asker = Asker(store, "run", "judge", Abstaining())
    asked = post(store, "judge", comparisons=2, ratings=0)
    asker.ask(asked)
    assert asker.metrics()["abstained"] == 2
    assert set(store.status([q for q, _ in asked]).values()) == {"abstained"}
    assert len(store.labels("run", abstentions=True)) == 2
