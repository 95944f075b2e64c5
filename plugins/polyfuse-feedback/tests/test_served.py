"""The store writer behind ``polyfuse serve --log-feedback``: segments in, a seeded share asked as ratings."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import Segment
from polyfuse_feedback.served import StoreSink, open_sink
from polyfuse_feedback.store import LabelStore


def segment(reward: float) -> Segment:
    return Segment({"x": np.zeros((1, 2), np.float32)}, np.array([1]), np.array([reward], np.float32), [{}],
                   True, False, 0)


def asked(db, share: float, seed: int) -> list[int]:
    sink = open_sink(str(db), "served-run", query_share=share, source="synthetic", seed=seed)
    try:
        for _ in range(4):
            sink.write([segment(1.0)] * 50)
    finally:
        sink.close()
    with LabelStore(f"sqlite:///{db}") as store:
        queries = store.pending("served-run")
        assert all(q.source == "synthetic" and q.second is None and q.scale == 2 for q in queries)
        (project,) = store.projects()
        assert project.segments == 200
    return [q.first for q in queries]


def test_a_seeded_share_of_the_segments_is_asked(tmp_path) -> None:
    first = asked(tmp_path / "a.sqlite", 0.25, seed=3)
    assert 30 <= len(first) <= 70  # 200 draws at 0.25
    assert asked(tmp_path / "b.sqlite", 0.25, seed=3) == first
    assert asked(tmp_path / "c.sqlite", 0.25, seed=4) != first
    assert asked(tmp_path / "d.sqlite", 0.0, seed=3) == []
    assert len(asked(tmp_path / "e.sqlite", 1.0, seed=3)) == 200


def test_settings_are_checked(tmp_path) -> None:
    with LabelStore(f"sqlite:///{tmp_path / 'x.sqlite'}") as store:
        with pytest.raises(PolyfuseError, match="share of episodes asked"):
            StoreSink(store, "p", query_share=1.5)
        with pytest.raises(PolyfuseError, match="at least 2 levels"):
            StoreSink(store, "p", query_share=0.5, scale=1)


def test_a_write_that_fails_part_way_leaves_nothing_to_be_written_twice(tmp_path, monkeypatch) -> None:
    sink = open_sink(str(tmp_path / "s.sqlite"), "served-run", query_share=1.0, source="synthetic")
    posting = sink.store._post_queries

    def down(*args, **kwargs):
        raise ConnectionError("database is down")

    try:
        monkeypatch.setattr(sink.store, "_post_queries", down)
        with pytest.raises(ConnectionError):
            sink.write([segment(1.0)] * 3)  # the segments were added, then posting their queries failed
        monkeypatch.setattr(sink.store, "_post_queries", posting)
        sink.write([segment(1.0)] * 3)  # the server's retry of the same episodes
    finally:
        sink.close()
    with LabelStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        (project,) = store.projects()
        assert project.segments == 3 and len(store.pending("served-run")) == 3
