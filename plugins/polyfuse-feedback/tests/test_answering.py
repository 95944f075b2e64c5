"""``polyfuse feedback answer``: an automatic source answers a project's pending queries offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_chat_server import ChatServer
from judge_segments import ANSWERS, digits_segment
from polyfuse.cli import build_parser
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import Segment
from polyfuse_feedback import plugin
from polyfuse_feedback.store import LabelStore


@pytest.fixture
def run_command(make_registry):
    """``run_command(*argv)``: parse as ``polyfuse`` would and call the handler; its exit status."""
    registry = make_registry(plugin, installed=False)

    def run(*argv: str) -> int:
        args = build_parser(registry).parse_args(list(argv))
        return args.handler(args, registry)

    return run


def rated(reward: float) -> Segment:
    return Segment({"x": np.zeros((1, 2), np.float32)}, np.array([0]), np.array([reward], np.float32), [{}],
                   True, False, 0)


def test_synthetic_answers_its_pending_queries_and_abstains_on_unknown_rewards(run_command, tmp_path, capsys):
    db = tmp_path / "served.sqlite"
    with LabelStore(f"sqlite:///{db}") as store:
        ids = store.add_segments("served", [rated(1.0), rated(0.0), rated(float("nan")), rated(1.0)])
        posted = store.post_queries("served", [(ids[0], None, 2, 0.0, "synthetic"), (ids[1], None, 2, 0.0, "synthetic"),
                                               (ids[2], None, 2, 0.0, "synthetic"), (ids[0], ids[1], 0, 0.0, "synthetic"),
                                               (ids[3], None, 2, 0.0, "human")])
    assert run_command("feedback", "answer", "--db", str(db), "--project", "served", "--source", "synthetic") == 0
    captured = capsys.readouterr()
    assert "synthetic answered 4 pending queries of project 'served': 3 labelled, 1 abstained, 0 failed" in captured.out
    with LabelStore(f"sqlite:///{db}") as store:
        records = {r.query_id: r for r in store.labels("served", abstentions=True)}
        assert records[posted[0]].rating == 2 and records[posted[1]].rating == 1
        assert records[posted[2]].label is None and records[posted[3]].preference == 0.0
        assert [q.id for q in store.pending("served")] == [posted[4]]  # the human's query is left to people
    assert run_command("feedback", "answer", "--db", str(db), "--project", "served", "--source", "synthetic") == 0
    assert "answered 0 pending queries" in capsys.readouterr().out


def test_a_judge_answers_through_its_endpoint(run_command, tmp_path, capsys):
    db = tmp_path / "served.sqlite"
    right, wrong = digits_segment("what digit is this?", 3, 3), digits_segment("what digit is this?", 5, 3, shade=255)
    with LabelStore(f"sqlite:///{db}") as store:
        ids = store.add_segments("served", [right, wrong])
        posted = store.post_queries("served", [(ids[0], None, 2, 0.0, "http-judge"), (ids[1], None, 2, 0.0, "http-judge")])
    segment = "question: {question}\nanswer: {action} reference: {expert_action!n}"
    with ChatServer() as server:
        params = json.dumps({"url": server.url, "model": "judge", "segment": segment, "action_names": ANSWERS})
        status = run_command("feedback", "answer", "--db", str(db), "--project", "served", "--source", "http-judge",
                             "--params", params)
    assert status == 0, capsys.readouterr()
    assert "2 labelled, 0 abstained, 0 failed" in capsys.readouterr().out
    with LabelStore(f"sqlite:///{db}") as store:
        ratings = {r.query_id: r.rating for r in store.labels("served")}
    assert ratings == {posted[0]: 2, posted[1]: 1}


def test_mistakes_are_clear_errors(run_command, tmp_path):
    db = tmp_path / "served.sqlite"
    with LabelStore(f"sqlite:///{db}") as store:
        store.project("served")
    answer = ("feedback", "answer", "--db", str(db), "--project")
    with pytest.raises(PolyfuseError, match="no project named 'other'.*its projects: served"):
        run_command(*answer, "other", "--source", "synthetic")
    with pytest.raises(PolyfuseError, match="answered by people in the annotation app"):
        run_command(*answer, "served", "--source", "human")
    with pytest.raises(PolyfuseError, match="--params is not valid JSON"):
        run_command(*answer, "served", "--source", "synthetic", "--params", "{temperature: 1}")
    with pytest.raises(PolyfuseError, match="temperature"):
        run_command(*answer, "served", "--source", "synthetic", "--params", '{"temperature": -1}')
