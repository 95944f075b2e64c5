"""DigitsVQA: visual question answering on scikit-learn's 8x8 digit scans, one question per episode.

A contextual bandit that needs both modalities: the same image has different
answers for different questions ("what digit is this?", "is it even?", "is
this a seven?"), and the same question different answers for different
images. Small enough to train on a laptop CPU in minutes, real enough (1,797
handwritten scans) that held-out accuracy means something.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ANSWERS: tuple[str, ...] = tuple(str(d) for d in range(10)) + ("yes", "no")
YES, NO = ANSWERS.index("yes"), ANSWERS.index("no")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_CHARSET = string.ascii_lowercase + " ?"
MAX_QUESTION_LENGTH = 64
TEST_FRACTION = 0.25
SPLIT_SEED = 0  # fixed, so every run (and every user) sees the same held-out images


@dataclass(frozen=True)
class Question:
    """A question family: its phrasings and the correct answer index for a digit."""

    phrasings: tuple[str, ...]
    answer: Callable[[int], int]


def _yes_no(condition: bool) -> int:
    return YES if condition else NO


QUESTIONS: tuple[Question, ...] = (
    Question(("what digit is this?", "which digit is shown?"), lambda d: d),
    Question(("is this digit even?", "is it an even number?"), lambda d: _yes_no(d % 2 == 0)),
    Question(("is this digit odd?", "is it an odd number?"), lambda d: _yes_no(d % 2 == 1)),
    Question(("is it greater than five?",), lambda d: _yes_no(d > 5)),
    Question(("is it less than five?",), lambda d: _yes_no(d < 5)),
)
"""Families asked about the image alone; "is this a <word>?" (see :func:`_is_a`) is sampled separately."""


@lru_cache(maxsize=1)
def _dataset() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All images as uint8 (N, 8, 8, 1) in 0..255, their labels, and the fixed split's indices."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    return images, labels, {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}


class DigitsVQAEnv(gym.Env[dict[str, Any], np.int64]):
    """Answer a question about a handwritten digit.

    Observation (Dict):
      - ``image``: uint8 ``(8, 8, 1)``, the scan's 0..16 ink levels rescaled to 0..255 so image
        encoders treat it like any 8-bit image;
      - ``question``: a :class:`gymnasium.spaces.Text` question.

    Action: an answer index into :data:`ANSWERS` (digits ``0``-``9``, ``yes``, ``no``).
    Reward: 1 for the correct answer, else 0; the episode ends after the answer.
    ``info`` holds ``success`` and ``expert_action`` (the correct answer, for supervised warm
    start) at reset and at the step.

    ``split="train"`` draws from 75% of the images, ``split="test"`` from the other 25%;
    the split is fixed, so test images never appear in training.
    """

    metadata: dict[str, Any] = {"render_modes": [], "polyfuse.eval_kwargs": {"split": "test"}}
    answers = ANSWERS

    def __init__(self, split: Literal["train", "test"] = "train") -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self._images, self._labels, splits = _dataset()
        self._indices = splits[split]
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (8, 8, 1), np.uint8),
                "question": spaces.Text(MAX_QUESTION_LENGTH, min_length=1, charset=QUESTION_CHARSET),
            }
        )
        self.action_space = spaces.Discrete(len(ANSWERS))
        self._image_index = 0
        self._question = ""
        self._answer = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self._image_index = int(rng.choice(self._indices))
        digit = int(self._labels[self._image_index])
        family = int(rng.integers(len(QUESTIONS) + 1))
        if family == len(QUESTIONS):
            self._question, self._answer = _is_a(digit, rng)
        else:
            question = QUESTIONS[family]
            self._question = question.phrasings[int(rng.integers(len(question.phrasings)))]
            self._answer = question.answer(digit)
        return self._observation(), {"success": False, "expert_action": self._answer}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        correct = int(action) == self._answer
        info = {"success": correct, "expert_action": self._answer}
        return self._observation(), float(correct), True, False, info

    def _observation(self) -> dict[str, Any]:
        return {"image": self._images[self._image_index].copy(), "question": self._question}


def _is_a(digit: int, rng: np.random.Generator) -> tuple[str, int]:
    """Ask "is this a <word>?" about the true digit half the time, so that yes and no are balanced."""
    asked = digit if rng.random() < 0.5 else int((digit + rng.integers(1, 10)) % 10)
    return f"is this a {NUMBER_WORDS[asked]}?", _yes_no(asked == digit)
