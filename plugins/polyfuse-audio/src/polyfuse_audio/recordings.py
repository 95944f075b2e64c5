"""The spoken questions shipped with the package: reading them, and the format they are stored in.

Recordings are 8 kHz mono, companded to 8 bits with G.711 mu-law (telephone speech: intelligible,
half the size of int16) and kept in one compressed ``.npz``: every clip end to end in ``audio``,
``offsets`` where each starts (and the total at the end), and per clip the question, the voice,
and the speed and pitch espeak-ng spoke it with. ``scripts/make_recordings.py`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 8000
MU = 255
DATA_FILE = Path(__file__).parent / "data" / "spoken_questions.npz"


def mu_law_encode(waveform: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1] to uint8 mu-law codes (G.711's curve, without its bit inversions)."""
    clipped = np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(MU * np.abs(clipped)) / np.log1p(MU)
    return np.round((companded + 1.0) / 2.0 * MU).astype(np.uint8)


def mu_law_decode(codes: np.ndarray) -> np.ndarray:
    """uint8 mu-law codes back to float32 in [-1, 1]."""
    companded = codes.astype(np.float64) / MU * 2.0 - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(MU)) / MU).astype(np.float32)


@dataclass(frozen=True)
class Recordings:
    """Every clip decoded, padded with silence to one length, with what it says and who says it."""

    waveforms: np.ndarray  # (N, length) int16, speech from sample 0, silence after (shared: do not modify)
    lengths: np.ndarray  # (N,) samples of speech in each clip
    questions: tuple[str, ...]  # the distinct question texts
    question: np.ndarray  # (N,) index into questions
    voices: tuple[str, ...]  # espeak-ng voice names, e.g. "en-us+m3"
    voice: np.ndarray  # (N,) index into voices
    test_voices: frozenset[str]  # held out: spoken only in the test split
    sample_rate: int

    def clips(self, text: str, split: str) -> np.ndarray:
        """Indices of the clips of question ``text`` spoken by the voices of ``split`` ("train" or "test")."""
        held_out = np.array([name in self.test_voices for name in self.voices])[self.voice]
        spoken = self.question == self.questions.index(text)
        return np.flatnonzero(spoken & (held_out if split == "test" else ~held_out))


def save(path: Path, clips: list[np.ndarray], question: list[int], questions: list[str], voice: list[int],
         voices: list[str], test_voices: list[str], speed: list[int], pitch: list[int]) -> None:
    """Write clips (float arrays at :data:`SAMPLE_RATE`) in the format :func:`load` reads."""
    offsets = np.cumsum([0, *(len(clip) for clip in clips)]).astype(np.int64)
    np.savez_compressed(
        path, audio=mu_law_encode(np.concatenate(clips)), offsets=offsets, sample_rate=np.int64(SAMPLE_RATE),
        questions=np.array(questions), question=np.array(question, dtype=np.int16),
        voices=np.array(voices), voice=np.array(voice, dtype=np.int16), test_voices=np.array(test_voices),
        speed=np.array(speed, dtype=np.int16), pitch=np.array(pitch, dtype=np.int16),
    )


@lru_cache(maxsize=2)
def load(path: Path = DATA_FILE) -> Recordings:
    """The recordings at ``path`` (default: the package's), decoded once per process and shared by its
    environments (int16: what rollouts and replay buffers hold is half the size of float32)."""
    with np.load(path) as data:
        audio = np.round(mu_law_decode(data["audio"]) * 32767).astype(np.int16)
        offsets = data["offsets"]
        lengths = np.diff(offsets)
        waveforms = np.zeros((len(lengths), int(lengths.max())), dtype=np.int16)
        for row, (start, end) in enumerate(zip(offsets[:-1], offsets[1:])):
            waveforms[row, : end - start] = audio[start:end]
        return Recordings(
            waveforms=waveforms, lengths=lengths, questions=tuple(str(q) for q in data["questions"]),
            question=data["question"].astype(np.int64), voices=tuple(str(v) for v in data["voices"]),
            voice=data["voice"].astype(np.int64), test_voices=frozenset(str(v) for v in data["test_voices"]),
            sample_rate=int(data["sample_rate"]),
        )
