"""Test signals: pure tones and their measured frequency."""

from __future__ import annotations

import numpy as np
import torch


def tone(frequency: float, sample_rate: int, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    """A pure sine as float32."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_frequency(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> float:
    """The frequency (Hz) of the strongest bin of a Hann-windowed spectrum."""
    values = np.asarray(waveform, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(values * np.hanning(len(values))))
    return float(np.argmax(spectrum)) * sample_rate / len(values)
