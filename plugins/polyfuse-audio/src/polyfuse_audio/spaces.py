"""The gymnasium space of an audio observation: a mono waveform with its sample rate.

polyfuse reads one level of dict keys, each an array per sample, so audio is a
:class:`gymnasium.spaces.Box` of shape ``(length,)`` (float32 in [-1, 1], or int16) that also
carries ``sample_rate``. Encoders read the rate from the space and resample to their own; a
shorter clip is padded with silence to ``length``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

AUDIO_DTYPES = (np.float32, np.int16)


class Audio(spaces.Box):
    """A mono waveform of ``length`` samples at ``sample_rate`` Hz (float32 in [-1, 1] or int16)."""

    def __init__(self, length: int, sample_rate: int, dtype: Any = np.float32, seed: Any = None) -> None:
        if int(length) < 1 or int(sample_rate) < 1:
            raise ValueError(f"Audio needs a positive length and sample_rate, got {length} and {sample_rate}")
        dtype = np.dtype(dtype)
        if dtype not in [np.dtype(d) for d in AUDIO_DTYPES]:
            raise ValueError(f"Audio samples are float32 (in [-1, 1]) or int16, not {dtype}")
        low, high = (-1.0, 1.0) if dtype == np.float32 else (-32768, 32767)
        super().__init__(low, high, (int(length),), dtype, seed=seed)
        self.sample_rate = int(sample_rate)

    @property
    def seconds(self) -> float:
        return self.shape[0] / self.sample_rate

    def __repr__(self) -> str:
        return f"Audio({self.shape[0]} samples, {self.sample_rate} Hz, {self.dtype})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Audio) and super().__eq__(other) and other.sample_rate == self.sample_rate

    __hash__ = None  # type: ignore[assignment]  # as Box


def audio_space_problem(space: Any) -> str | None:
    """What an audio encoder reads, when ``space`` is not it (``None`` when it is); no torch imported.

    Any space with an integer ``sample_rate`` and a one-dimensional shape qualifies, so environments
    may declare audio without depending on this package.
    """
    rate = getattr(space, "sample_rate", None)
    if isinstance(rate, int) and rate > 0 and len(getattr(space, "shape", None) or ()) == 1:
        return None
    return ("audio: a mono waveform space with its sample rate (polyfuse_audio.spaces.Audio(length, "
            "sample_rate), a 1-D Box with a sample_rate)")
