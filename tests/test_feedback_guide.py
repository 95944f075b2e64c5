"""CONTRIBUTING.md's worked feedback source: a person answering in the terminal, tested and shown verbatim."""

from __future__ import annotations

import inspect
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from pydantic import Field

import polyfuse
from polyfuse.feedback import FeedbackSource, Label, Query
from polyfuse.rewards import Segment


class TerminalConfig(polyfuse.ComponentConfig):
    text_key: str = Field("question", description="The observation's text field to show for each segment.")


class TerminalJudge(FeedbackSource):
    """Shows each query's text and actions in the terminal and reads the person's answer."""

    asynchronous = True  # a person is slow: asked from a background thread, training goes on
    batch_size = 1  # each answer is stored as soon as it is given

    def __init__(self, config: TerminalConfig, answers: TextIO, screen: TextIO) -> None:
        self.config, self.answers, self.screen = config, answers, screen
        self.skipped = 0

    def _show(self, name: str, segment: Segment) -> None:
        text = segment.observations.get(self.config.text_key, ("",))[0]
        print(f"{name}: {text!r} -> actions {segment.actions.tolist()}", file=self.screen)

    def _answer(self, query: Query) -> Label | None:
        self._show("1", query.first)
        if query.second is None:
            print(f"rate it from 1 to {query.scale}, or ? to skip:", file=self.screen)
            reply = self.answers.readline().strip()
            return Label(rating=int(reply)) if reply.isdigit() and 1 <= int(reply) <= query.scale else None
        self._show("2", query.second)
        print("which is better: 1, 2, t(ie) or ? to skip:", file=self.screen)
        reply = self.answers.readline().strip().lower()
        return {"1": Label(0.0), "2": Label(1.0), "t": Label(0.5)}.get(reply)

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        labels = [self._answer(query) for query in queries]
        self.skipped += labels.count(None)
        return labels

    def metrics(self) -> dict[str, float]:
        return {"skipped": float(self.skipped)}


def build_terminal(config: TerminalConfig, seed: int = 0) -> TerminalJudge:
    import sys

    return TerminalJudge(config, sys.stdin, sys.stderr)


@polyfuse.hookimpl
def register_feedback(register):
    register("terminal", build_terminal, config=TerminalConfig, description="A person answering in the terminal")


def segment(question: str, action: int) -> Segment:
    return Segment({"question": (question,)}, np.array([action]), np.zeros(1, np.float32), [{}], True, False, 0)


def test_the_terminal_judge_answers_comparisons_and_ratings_and_skips() -> None:
    screen = io.StringIO()
    judge = TerminalJudge(TerminalConfig(), io.StringIO("2\nt\n?\n4\n9\n"), screen)
    pair = Query(segment("is it a seven?", 10), segment("is it a seven?", 11))
    labels = judge.label([pair, pair, pair, Query(segment("what digit?", 3), scale=5),
                          Query(segment("what digit?", 4), scale=5)])
    assert labels == [Label(1.0), Label(0.5), None, Label(rating=4), None]
    assert judge.metrics() == {"skipped": 2.0}
    assert "1: 'is it a seven?' -> actions [10]" in screen.getvalue()


def test_the_terminal_judge_registers_like_any_feedback_source(make_registry) -> None:
    import sys

    registry = make_registry(sys.modules[__name__], installed=False)
    judge = registry.create("feedback", "terminal", {"text_key": "mission"}, seed=0)
    assert isinstance(judge, TerminalJudge) and judge.asynchronous and judge.batch_size == 1
    assert judge.config.text_key == "mission"


def test_contributing_shows_this_feedback_source_verbatim() -> None:
    guide = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for item in (TerminalConfig, TerminalJudge, build_terminal, register_feedback):
        assert inspect.getsource(item) in guide, f"update CONTRIBUTING.md's listing of {item.__name__}"
