"""Episode logging on its own: answered steps grouped by episode id, ended by an outcome, all written at close."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from polyfuse.rewards import Segment
from polyfuse.serving.episodes import EpisodeRecorder
from polyfuse.serving.inputs import InvalidInput, decode_outcome


class Sink:
    def __init__(self, failures: int = 0) -> None:
        self.segments: list[Segment] = []
        self.failures = failures
        self.threads: set[str] = set()

    def write(self, segments: list[Segment]) -> None:
        self.threads.add(threading.current_thread().name)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        self.segments += segments


def batch(*questions: str) -> dict:
    return {"image": np.arange(len(questions) * 4).reshape(len(questions), 2, 2), "question": tuple(questions)}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_steps_of_one_episode_form_one_segment_with_the_rewards_reported() -> None:
    sink = Sink()
    recorder = EpisodeRecorder(sink, flush_every_s=60)
    recorder.answered(batch("a", "b"), np.array([3, 4]), ["e1", "e2"], 100)
    recorder.answered(batch("c"), np.array([5]), ["e1"], 200)  # a reloaded policy answered this one
    assert recorder.outcome("e1", 1.0, done=False) and recorder.outcome("e1", None, done=True)
    assert not recorder.outcome("e1", 0.0, done=True)  # ended already
    assert not recorder.outcome("never", 0.0, done=True)
    recorder.answered(batch("d"), np.array([6]), [None], 200)  # no id: an episode of one step, reward unknown
    assert "polyfuse_episodes_waiting 3" in recorder.prometheus()  # e1 (ended), d, e2 (open)
    recorder.close()
    first, anonymous, open_at_close = sink.segments
    assert first.actions.tolist() == [3, 5] and first.observations["question"] == ("a", "c")
    assert first.observations["image"].tolist() == [[[0, 1], [2, 3]], [[0, 1], [2, 3]]]
    assert np.isnan(first.env_rewards[0]) and first.env_rewards[1] == 1.0 and first.terminated
    assert first.infos == [{"policy_step": 100}, {"policy_step": 200}]
    assert anonymous.actions.tolist() == [6] and np.isnan(anonymous.env_rewards).all()
    assert not anonymous.terminated and not anonymous.truncated
    assert open_at_close.actions.tolist() == [4] and open_at_close.truncated and not open_at_close.terminated
    assert recorder.written == 3 and "polyfuse_episodes_logged_total 3" in recorder.prometheus()


def test_writes_happen_on_the_background_thread_and_a_failed_write_is_retried() -> None:
    sink, log = Sink(failures=1), io.StringIO()
    recorder = EpisodeRecorder(sink, flush_every_s=0.01, log=log)
    recorder.answered(batch("a"), np.array([1]), [None], 0)
    deadline = time.monotonic() + 60  # bounded: a writer that never writes fails the test instead of hanging it
    while len(sink.segments) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.close()
    assert len(sink.segments) == 1 and recorder.failed_writes == 1
    assert "database is down" in log.getvalue() and sink.threads == {"polyfuse-episode-log"}


def test_idle_and_long_episodes_are_cut() -> None:
    sink, clock = Sink(), Clock()
    recorder = EpisodeRecorder(sink, flush_every_s=60, idle_timeout_s=10, max_steps=2, clock=clock)
    recorder.answered(batch("a", "b", "c"), np.array([1, 2, 3]), ["long", "long", "idle"], 0)
    clock.now = 11
    recorder.answered(batch("d"), np.array([4]), ["long"], 0)
    recorder._flush()  # what the thread does each second
    assert [s.actions.tolist() for s in sink.segments] == [[1, 2], [3]]
    assert sink.segments[1].truncated and not sink.segments[0].truncated
    recorder.close()
    assert [s.actions.tolist() for s in sink.segments][-1] == [4]


def test_the_outcome_of_a_full_fragments_last_step_is_kept() -> None:
    sink = Sink()
    recorder = EpisodeRecorder(sink, flush_every_s=60, max_steps=2)
    recorder.answered(batch("a", "b"), np.array([1, 2]), ["long", "long"], 0)
    assert recorder.outcome("long", 1.0, done=False)  # the second step's reward, reported after it
    recorder.answered(batch("c"), np.array([3]), ["long"], 0)
    assert recorder.outcome("long", 0.5, done=True)
    recorder.close()
    first, second = sink.segments
    assert first.actions.tolist() == [1, 2] and first.env_rewards[1] == 1.0 and not first.terminated
    assert second.actions.tolist() == [3] and second.env_rewards.tolist() == [0.5] and second.terminated


@pytest.mark.parametrize(("body", "field"), [
    ({"reward": 1.0}, "body"), ({"episode": "e", "extra": 1}, "body"), ([], "body"),
    ({"episode": "", "reward": 1.0}, "episode"), ({"episode": "e", "reward": "high"}, "reward"),
    ({"episode": "e", "reward": True}, "reward"), ({"episode": "e", "done": 1}, "done"),
    ({"episode": "e", "reward": 10**400}, "reward"), ({"episode": "e", "reward": float("inf")}, "reward"),
])
def test_outcome_mistakes_name_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_outcome(body)
    assert caught.value.field == field


def test_outcome_defaults() -> None:
    assert decode_outcome({"episode": 7}) == ("7", None, False)
    assert decode_outcome({"episode": "e", "reward": 1, "done": True}) == ("e", 1.0, True)


def test_a_store_down_for_long_keeps_only_the_newest_backlog() -> None:
    sink, log = Sink(failures=1), io.StringIO()
    recorder = EpisodeRecorder(sink, flush_every_s=60, max_backlog=2, log=log)
    recorder.answered(batch("a", "b", "c"), np.array([1, 2, 3]), [None, None, None], 0)
    recorder._flush()  # fails: the store is down; the oldest episode past the limit goes
    assert recorder.dropped == 1 and "polyfuse_episodes_dropped_total 1" in recorder.prometheus()
    assert "1 of the oldest unwritten episodes dropped" in log.getvalue()
    recorder.close()
    assert [segment.actions.tolist() for segment in sink.segments] == [[2], [3]]
