"""DigitsVQA: visual question answering on scikit-learn's 8x8 digit scans, one question per episode.

A contextual bandit that needs both modalities: the same image has different
answers for different questions ("what digit is this?", "is it even?", "is
this a seven?"), and the same question different answers for different
images. Small enough to train on a laptop CPU in minutes, real enough (1,797
handwritten scans) that held-out accuracy means something.
"""

from __future__ import annotations

import importlib.util
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from polyfuse.rl.rng import generator_state, set_generator_state

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
"""Families asked about the image alone; "is this a <word>?" (see :func:`draw_episodes`) is sampled separately."""


@lru_cache(maxsize=1)
def _dataset() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """All images as uint8 (N, 8, 8, 1) in 0..255, their labels, and the fixed split's indices."""
    ink, labels = _digits()
    images = np.round(ink.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    return images, labels, {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}


_FAMILY_ANSWERS = np.array([[question.answer(digit) for digit in range(10)] for question in QUESTIONS])
_IS_A_QUESTIONS = tuple(f"is this a {word}?" for word in NUMBER_WORDS)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (N, 64) ink levels 0..16 and (N,) labels.

    Read straight from the CSV scikit-learn ships, which skips importing
    scikit-learn (most of a second, in every process and vector-env worker);
    ``load_digits`` reads the same file, and is the fallback should its place change.
    """
    spec = importlib.util.find_spec("sklearn")
    data = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if data is None or not data.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data, digits.target.astype(np.int64)
    table = np.loadtxt(data, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def draw_episodes(
    rng: np.random.Generator, indices: np.ndarray, labels: np.ndarray, count: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``count`` episodes at once: image indices (from ``indices``), questions and correct answers.

    Each question family is equally likely, "is this a <word>?" included; that
    one asks about the true digit half the time, so that yes and no are balanced.
    """
    image_index = rng.choice(indices, size=count)
    digits = labels[image_index]
    family = rng.integers(len(QUESTIONS) + 1, size=count)
    phrasing = rng.random(count)
    asked = np.where(rng.random(count) < 0.5, digits, (digits + rng.integers(1, 10, size=count)) % 10)
    is_a = family == len(QUESTIONS)
    answers = np.where(
        is_a, np.where(asked == digits, YES, NO), _FAMILY_ANSWERS[np.minimum(family, len(QUESTIONS) - 1), digits]
    ).astype(np.int64)
    questions = [
        _IS_A_QUESTIONS[a] if f == len(QUESTIONS)
        else QUESTIONS[f].phrasings[int(p * len(QUESTIONS[f].phrasings))]
        for f, p, a in zip(family.tolist(), phrasing.tolist(), asked.tolist())
    ]
    return image_index, questions, answers


def observation_space() -> spaces.Dict:
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (8, 8, 1), np.uint8),
            "question": spaces.Text(MAX_QUESTION_LENGTH, min_length=1, charset=QUESTION_CHARSET),
        }
    )


def _split_indices(split: str) -> np.ndarray:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _dataset()[2][split]


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
        self._indices = _split_indices(split)
        self.split = split
        self._images, self._labels, _ = _dataset()
        self.observation_space = observation_space()
        self.action_space = spaces.Discrete(len(ANSWERS))
        self._image_index = 0
        self._question = ""
        self._answer = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        image_index, questions, answers = draw_episodes(self.np_random, self._indices, self._labels, 1)
        self._image_index, self._question, self._answer = int(image_index[0]), questions[0], int(answers[0])
        return self._observation(), {"success": False, "expert_action": self._answer}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        correct = int(action) == self._answer
        info = {"success": correct, "expert_action": self._answer}
        return self._observation(), float(correct), True, False, info

    def _observation(self) -> dict[str, Any]:
        return {"image": self._images[self._image_index].copy(), "question": self._question}

    def get_state(self) -> dict[str, Any]:
        """The generator and the episode in progress, as JSON values (see :mod:`polyfuse.training.vector_env`)."""
        return {"rng": generator_state(self.np_random), "image_index": self._image_index,
                "question": self._question, "answer": self._answer}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`get_state` was taken.

        A state without ``rng`` (an episode of :meth:`DigitsVQAVectorEnv.episode_states`, replayed in a
        scratch env) restores the episode and leaves the generator as it is: it only draws the next one.
        """
        if "rng" in state:
            set_generator_state(self.np_random, state["rng"])
        self._image_index, self._question = int(state["image_index"]), str(state["question"])
        self._answer = int(state["answer"])


class DigitsVQAVectorEnv(VectorEnv):
    """``num_envs`` DigitsVQA episodes drawn and answered as numpy arrays (``env.vectorization: native``).

    The same task as :class:`DigitsVQAEnv` with gymnasium's same-step autoreset
    (every step ends every episode, so each step returns the next episodes'
    observations, the answered ones in ``infos["final_obs"]``), without a
    Python object and a wrapper stack per environment: stepping 16 episodes
    costs about as much as stepping one. Reseeding draws from one generator
    for all environments, so its episodes differ from a SyncVectorEnv's with
    the same seed.
    """

    metadata: dict[str, Any] = {
        "render_modes": [],
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "polyfuse.eval_kwargs": {"split": "test"},
    }

    def __init__(self, num_envs: int = 1, split: Literal["train", "test"] = "train") -> None:
        self._indices = _split_indices(split)
        self.split = split
        self.num_envs = int(num_envs)
        self._images, self._labels, _ = _dataset()
        self.single_observation_space = observation_space()
        self.single_action_space = spaces.Discrete(len(ANSWERS))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rng = np.random.default_rng()
        self._every = np.ones(self.num_envs, dtype=bool)
        self._draw()

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._draw()
        return self._observations(), self._infos(np.zeros(self.num_envs, dtype=bool))

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        correct = np.asarray(actions).reshape(self.num_envs) == self._answers
        answered = self._observations()
        final_obs = np.empty(self.num_envs, dtype=object)
        final_obs[:] = [{key: value[i] for key, value in answered.items()} for i in range(self.num_envs)]
        final_info = self._infos(correct)
        self._draw()
        infos = {"final_obs": final_obs, "_final_obs": self._every.copy(), "final_info": final_info,
                 "_final_info": self._every.copy(), **self._infos(np.zeros(self.num_envs, dtype=bool))}
        terminated = self._every.copy()
        return self._observations(), correct.astype(np.float64), terminated, ~terminated, infos

    def get_state(self) -> dict[str, Any]:
        """The generator and the episodes in progress, as arrays and JSON values (no pickle needed)."""
        return {"rng": generator_state(self._rng), "image_index": self._image_index.copy(),
                "questions": list(self._questions), "answers": self._answers.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`get_state` was taken: same episodes now, same draws next."""
        image_index = np.asarray(state["image_index"], dtype=np.int64)
        if image_index.shape != (self.num_envs,):
            raise ValueError(f"the saved state is of {image_index.shape[0]} environments, not {self.num_envs}")
        set_generator_state(self._rng, state["rng"])
        self._image_index = image_index.copy()
        self._questions = tuple(str(q) for q in state["questions"])
        self._answers = np.asarray(state["answers"], dtype=np.int64).copy()

    def episode_states(self) -> list[dict[str, Any]]:
        """Each environment's episode in progress, as a state :meth:`scratch_env`'s ``set_state`` takes.

        With :meth:`scratch_env`, the optional protocol by which a segment's context can be replayed
        with another action (see :func:`polyfuse.training.vector_env.episode_replayer`).
        """
        return [{"image_index": int(i), "question": q, "answer": int(a)}
                for i, q, a in zip(self._image_index.tolist(), self._questions, self._answers.tolist())]

    def scratch_env(self) -> DigitsVQAEnv:
        """A single environment of the same split, apart from these: restored and stepped to try other answers."""
        return DigitsVQAEnv(split=self.split)  # type: ignore[arg-type]

    def _draw(self) -> None:
        self._image_index, questions, self._answers = draw_episodes(
            self._rng, self._indices, self._labels, self.num_envs
        )
        self._questions = tuple(questions)

    def _observations(self) -> dict[str, Any]:
        return {"image": self._images[self._image_index], "question": self._questions}

    def _infos(self, success: np.ndarray) -> dict[str, Any]:
        return {"success": success, "_success": self._every.copy(),
                "expert_action": self._answers.copy(), "_expert_action": self._every.copy()}
