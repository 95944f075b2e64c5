"""Spoken DigitsVQA: DigitsVQA's questions asked aloud, by voices that differ between training and test.

The task and the images are DigitsVQA's (:mod:`polyfuse.envs.digits_vqa`); the question is also, or
only, a recording: ``speech``, an :class:`~polyfuse_audio.spaces.Audio` observation (8 kHz int16,
padded with silence to the longest clip, 1.6 s). ``question_modality="audio"`` (the default) gives ``image`` and
``speech``; ``"both"`` adds the text ``question``. Each episode's question is spoken by a voice of
its split, drawn from the environment's generator: ``split="test"`` asks about the test images in
voices (espeak-ng voice variants) never heard in training.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from polyfuse.envs.digits_vqa import DigitsVQAEnv, DigitsVQAVectorEnv, observation_space
from polyfuse_audio.recordings import Recordings, load
from polyfuse_audio.spaces import Audio

QuestionModality = Literal["audio", "both"]
QUESTION_MODALITIES = ("audio", "both")


class SpokenQuestions:
    """The recordings of one split: which clip speaks each episode's question, and the observations."""

    def __init__(self, split: str, question_modality: str, recordings: Recordings | None = None) -> None:
        if question_modality not in QUESTION_MODALITIES:
            raise ValueError(f"question_modality must be 'audio' (speech only) or 'both' (speech and text), "
                             f"got {question_modality!r}")
        self.recordings = recordings or load()
        self.question_modality = question_modality
        self._clips = {text: self.recordings.clips(text, split) for text in self.recordings.questions}
        silent = [text for text, clips in self._clips.items() if len(clips) == 0]
        if silent:
            raise ValueError(f"the recordings have no {split} voice for {silent}; run scripts/make_recordings.py")
        self.space = Audio(self.recordings.waveforms.shape[1], self.recordings.sample_rate, np.int16)

    def observation_space(self) -> spaces.Dict:
        text = observation_space()
        keys = {"image": text["image"], "speech": self.space}
        return spaces.Dict({**keys, "question": text["question"]} if self.question_modality == "both" else keys)

    def draw(self, rng: np.random.Generator, questions: tuple[str, ...] | list[str]) -> np.ndarray:
        """One clip per question, each a recording of that question by a voice of this split."""
        return np.array([clips[rng.integers(len(clips))] for clips in map(self._clips.__getitem__, questions)],
                        dtype=np.int64)

    def observation(self, text_observation: dict[str, Any], clips: np.ndarray | int) -> dict[str, Any]:
        """DigitsVQA's observation (one, or a batch) with the speech added and, unless 'both', the text removed."""
        observed = {**text_observation, "speech": self.recordings.waveforms[clips].copy()}
        if self.question_modality == "audio":
            del observed["question"]
        return observed


class SpokenDigitsVQAEnv(DigitsVQAEnv):
    """DigitsVQA with the question spoken (see the module); ``info`` and rewards as DigitsVQA's."""

    def __init__(self, split: Literal["train", "test"] = "train", question_modality: QuestionModality = "audio") -> None:
        super().__init__(split)
        self.question_modality = question_modality
        self._speech = SpokenQuestions(split, question_modality)
        self.observation_space = self._speech.observation_space()
        self._clip = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        _, info = super().reset(seed=seed, options=options)
        self._clip = int(self._speech.draw(self.np_random, [self._question])[0])
        return self._observation(), info

    def _observation(self) -> dict[str, Any]:
        return self._speech.observation(super()._observation(), self._clip)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "clip": self._clip}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._clip = int(state["clip"])


class SpokenDigitsVQAVectorEnv(DigitsVQAVectorEnv):
    """The batched implementation (``env.vectorization: native``), as DigitsVQA's."""

    def __init__(self, num_envs: int = 1, split: Literal["train", "test"] = "train",
                 question_modality: QuestionModality = "audio") -> None:
        self.question_modality = question_modality
        self._speech = SpokenQuestions(split, question_modality)  # before super().__init__, which draws
        super().__init__(num_envs, split)
        self.single_observation_space = self._speech.observation_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _draw(self) -> None:
        super()._draw()
        self._clips = self._speech.draw(self._rng, self._questions)

    def _observations(self) -> dict[str, Any]:
        return self._speech.observation(super()._observations(), self._clips)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "clips": self._clips.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._clips = np.asarray(state["clips"], dtype=np.int64).copy()

    def episode_states(self) -> list[dict[str, Any]]:
        return [{**episode, "clip": int(clip)} for episode, clip in zip(super().episode_states(), self._clips.tolist())]

    def scratch_env(self) -> SpokenDigitsVQAEnv:
        return SpokenDigitsVQAEnv(split=self.split, question_modality=self.question_modality)  # type: ignore[arg-type]
