"""http-judge against a real HTTP server on 127.0.0.1 (tests/fake_chat_server.py): answers, failures, limits."""

from __future__ import annotations

import base64
import email.utils
import socket
import time
import zlib
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label, Query
from polyfuse.registry import Kind
from polyfuse_feedback.judges.answers import MalformedAnswer, parse_comparison, parse_rating
from polyfuse_feedback.judges.configs import HttpJudgeConfig
from polyfuse_feedback.judges.http_judge import HttpJudge, retry_after_seconds
from polyfuse_feedback.judges.images import png_bytes

from fake_chat_server import ChatServer
from judge_segments import ANSWERS, JudgesPlugin, digits_segment

SEGMENT = "question: {question}\nanswer: {action} reference: {expert_action!n}"
RIGHT = digits_segment("what digit is this?", 3, 3)
WRONG = digits_segment("what digit is this?", 5, 3, shade=255)
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digits_vqa_rlhf_http_judge.yaml"


def judge(server: ChatServer | None, model: str = "judge", **params: Any) -> HttpJudge:
    params = {"url": server.url if server else params.pop("url"), "model": model, "segment": SEGMENT,
              "action_names": ANSWERS, "timeout_s": 0.5, "retries": 1, "backoff_s": 0.01, **params}
    return HttpJudge(HttpJudgeConfig(**params))


def counters(source: HttpJudge, *keys: str) -> dict[str, float]:
    return {key: source.metrics()[key] for key in keys}


def test_correct_answers_are_labels() -> None:
    with ChatServer() as server:
        source = judge(server)
        labels = source.label([Query(RIGHT, WRONG), Query(WRONG, RIGHT), Query(RIGHT, RIGHT), Query(WRONG, scale=2),
                               Query(RIGHT, scale=2)])
    assert [label.preference for label in labels[:3]] == [0.0, 1.0, 0.5]
    assert [label.rating for label in labels[3:]] == [1, 2]
    assert labels[0].confidence == 0.8, "an answer without a confidence gets default_confidence"
    assert counters(source, "answered", "abstained", "malformed") == {"answered": 5, "abstained": 0, "malformed": 0}
    assert source.asynchronous


def test_json_answers_carry_their_confidence() -> None:
    with ChatServer() as server:
        labels = judge(server, "judge-json").label([Query(WRONG, RIGHT), Query(RIGHT, scale=3)])
    assert labels == [Label(1.0, 0.9), Label(rating=2, confidence=0.9)]


def test_garbage_is_counted_malformed_and_abstained() -> None:
    with ChatServer() as server:
        source = judge(server, "garbage")
        assert source.label([Query(RIGHT, WRONG), Query(RIGHT, scale=2)]) == [None, None]
        assert len(server.requests) == 2, "a malformed answer is not retried"
    assert counters(source, "malformed", "abstained", "answered") == {"malformed": 2, "abstained": 2, "answered": 0}


def test_slow_answers_time_out_and_are_retried() -> None:
    with ChatServer() as server:
        source = judge(server, "slow", timeout_s=0.2, retries=1)
        assert source.label([Query(RIGHT, WRONG)]) == [None]
        assert len(server.requests) == 2
    assert counters(source, "timeouts", "retries", "abstained") == {"timeouts": 2, "retries": 1, "abstained": 1}


def test_server_errors_are_retried_then_abstained() -> None:
    with ChatServer() as server:
        source = judge(server, "error", retries=2)
        assert source.label([Query(RIGHT, WRONG)]) == [None]
        assert len(server.requests) == 3
    assert counters(source, "http_errors", "retries", "abstained") == {"http_errors": 3, "retries": 2, "abstained": 1}


def test_429_waits_retry_after_then_answers() -> None:
    with ChatServer() as server:
        source = judge(server, "busy", retries=1)
        assert source.label([Query(RIGHT, WRONG)]) == [Label(0.0, 0.8)]
        first, second = server.requests
    assert second["time"] - first["time"] >= 0.9, "the retry waited the server's Retry-After: 1"
    assert counters(source, "rate_limited", "answered") == {"rate_limited": 1, "answered": 1}


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert 0 < retry_after_seconds(email.utils.formatdate(time.time() + 60, usegmt=True)) <= 60
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_dead_port_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = judge(None, url=f"http://127.0.0.1:{port}/v1/chat/completions", retries=1)
    assert source.label([Query(RIGHT, WRONG), Query(WRONG, scale=2)]) == [None, None]
    assert counters(source, "connection_errors", "abstained") == {"connection_errors": 4, "abstained": 2}


def test_rate_limit_and_concurrency() -> None:
    with ChatServer() as server:
        source = judge(server, requests_per_minute=600, max_concurrency=2)  # one request per 0.1 s
        assert all(source.label([Query(RIGHT, WRONG)] * 4))
        times = sorted(request["time"] for request in server.requests)
    assert all(b - a >= 0.09 for a, b in pairwise(times))


def test_images_are_sent_as_enlarged_pngs() -> None:
    with ChatServer() as server:
        judge(server, vision=True, min_image_size=32).label([Query(RIGHT, WRONG)])
        content = server.requests[0]["body"]["messages"][-1]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert len(urls) == 2 and all(url.startswith("data:image/png;base64,") for url in urls)
    png = base64.b64decode(urls[1].split(",", 1)[1])
    assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") == 32  # width: 8 x 4
    rows = np.frombuffer(zlib.decompress(png[png.index(b"IDAT") + 4:-16]), np.uint8).reshape(32, 33)
    assert (rows[:, 0] == 0).all() and (rows[:, 1:] == 255).all(), "filter byte, then WRONG's white pixels"


def test_png_of_rgb() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    png = png_bytes(image)
    raw = np.frombuffer(zlib.decompress(png[png.index(b"IDAT") + 4:-16]), np.uint8).reshape(2, 10)
    assert (raw[:, 1:].reshape(2, 3, 3) == image).all()


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret")
    with ChatServer() as server:
        source = judge(server, api_key_env="JUDGE_TEST_KEY")
        source.label([Query(RIGHT, WRONG)])
        assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(source.config) and "sk-secret" not in str(source.metrics())
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(PolyfuseError, match="JUDGE_TEST_KEY, which is not set"):
        judge(None, url="http://127.0.0.1:1/", api_key_env="JUDGE_TEST_KEY")


def test_a_template_mistake_is_counted_not_raised() -> None:
    with ChatServer() as server:
        source = judge(server, segment="{no_such_field}")
        assert source.label([Query(RIGHT, WRONG)]) == [None]
    assert counters(source, "errors", "abstained") == {"errors": 1, "abstained": 1}


def test_default_description_lists_text_observations_and_actions() -> None:
    source = judge(None, url="http://127.0.0.1:1/", segment=None)
    assert source.describe(RIGHT) == "question: what digit is this?\nactions: 3"


@pytest.mark.parametrize("text, preference", [
    ("A", 0.0), ("**B**", 1.0), ("Answer: 2", 1.0), ("The first one.", 0.0), ("It's a tie", 0.5),
    ('{"choice": "b", "confidence": 85}', 1.0), ("<think>A or B?</think> B", 1.0),
])
def test_comparison_answers(text: str, preference: float) -> None:
    assert parse_comparison(text, 0.7).preference == preference


def test_unreadable_and_undecided_answers() -> None:
    assert parse_comparison("I can't tell.", 0.7) is None
    assert parse_rating("Unsure", 5, 0.7) is None
    assert parse_comparison('{"choice": "A", "confidence": 0.6}', 0.7) == Label(0.0, 0.6)
    for text in ("maybe", '{"reason": "x"}'):
        with pytest.raises(MalformedAnswer):
            parse_comparison(text, 0.7)
    assert parse_rating("Rating: 4/5", 5, 0.7) == Label(rating=4, confidence=0.7)
    for text in ("7", "2.5", "none"):
        with pytest.raises(MalformedAnswer):
            parse_rating(text, 5, 0.7)


def test_the_example_config_against_the_fake_server(make_registry: Any) -> None:
    """The example's judge params, pointed at the loopback fake instead of llama-server."""
    import yaml

    params = yaml.safe_load(EXAMPLE.read_text())["reward"]["params"]["feedback"]["params"]
    registry = make_registry(JudgesPlugin, installed=False)
    with ChatServer() as server:
        source = registry.create(Kind.FEEDBACK, "http-judge", {**params, "url": server.url, "model": "judge"})
        labels = source.label([Query(RIGHT, WRONG), Query(WRONG, RIGHT)])
        source.close()
    assert [label.preference for label in labels] == [0.0, 1.0]

