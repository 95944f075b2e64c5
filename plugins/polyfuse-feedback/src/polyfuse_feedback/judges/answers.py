"""Reading a language model's verdict: "A", "2", "tie", "can't tell", a number, or a JSON object.

Models phrase answers freely ("**B**", "Answer: 1", "The second one.",
``{"choice": "A", "confidence": 0.9}``, reasoning in ``<think>`` tags first),
so the first recognisable verdict counts. An answer that says it cannot tell
is an abstention (``None``); one with no verdict at all raises :class:`MalformedAnswer`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from polyfuse.feedback import Label

THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
CANT_TELL = re.compile(r"(?i)\b(?:can'?t|cannot|can not|unable to) (?:tell|say|decide|determine|judge)\b|"
                       r"\b(?:unsure|not sure|undecided|unknown|no idea)\b")
# A and B only as capitals: a lowercase "a" is an article ("a tie").
CHOICE = re.compile(r"\b(?:(?P<letter>[AB])|(?i:(?P<word>first|second|tie|equal|equally|same|both|neither|1|2)))\b")
PREFERENCES = {"a": 0.0, "1": 0.0, "first": 0.0, "b": 1.0, "2": 1.0, "second": 1.0}
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
CHOICE_KEYS = ("choice", "answer", "preference", "better", "winner", "verdict")
RATING_KEYS = ("rating", "score", "answer", "grade")


class MalformedAnswer(ValueError):
    """The reply holds no verdict the parser recognises."""


def _json_object(text: str) -> dict[str, Any] | None:
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        return None
    try:
        value = json.loads(match.group(0))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _confidence(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    value = float(value) / 100.0 if 1.0 < value <= 100.0 else float(value)  # "85" meaning 85%
    return min(max(value, 0.0), 1.0)


def _field(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in data.items()}
    return next((lowered[k] for k in keys if k in lowered), None)


def _verdict_text(text: str, keys: tuple[str, ...], what: str, default_confidence: float) -> tuple[str, float]:
    """The answer's verdict as text and its confidence: from a JSON object when it gives one, else the prose."""
    text = THINKING.sub("", text)
    data = _json_object(text)
    if data is None:
        return text, default_confidence
    verdict = _field(data, keys)
    if verdict is None:
        raise MalformedAnswer(f"JSON answer without {what}: {text[:200]!r}")
    return str(verdict), _confidence(_field(data, ("confidence", "certainty")), default_confidence)


def parse_comparison(text: str, default_confidence: float) -> Label | None:
    """A preference label (0: A/first, 1: B/second, 0.5: tie), ``None`` for "can't tell"."""
    text, confidence = _verdict_text(text, CHOICE_KEYS, "a choice", default_confidence)
    text = text.upper() if text.strip().lower() in ("a", "b") else text
    if CANT_TELL.search(text):
        return None
    match = CHOICE.search(text)
    if match is None:
        raise MalformedAnswer(f"no A/B/tie verdict in {text[:200]!r}")
    verdict = (match.group("letter") or match.group("word")).lower()
    return Label(PREFERENCES.get(verdict, 0.5), confidence)


def parse_rating(text: str, scale: int, default_confidence: float) -> Label | None:
    """A rating label from 1 to ``scale``, ``None`` for "can't tell"."""
    text, confidence = _verdict_text(text, RATING_KEYS, "a rating", default_confidence)
    if CANT_TELL.search(text):
        return None
    match = NUMBER.search(text)
    if match is None:
        raise MalformedAnswer(f"no rating in {text[:200]!r}")
    value = float(match.group(0))
    if value != int(value) or not 1 <= value <= scale:
        raise MalformedAnswer(f"rating {match.group(0)} is not a whole number from 1 to {scale}")
    return Label(rating=int(value), confidence=confidence)
