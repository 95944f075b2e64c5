"""Band-limited resampling in torch (torchaudio has no wheel for every torch): a polyphase windowed sinc.

Between rates ``orig`` and ``new`` (divided by their gcd), output sample ``n`` lies at input time
``n * orig / new``. Its value is the input convolved with a sinc low-pass at the lower Nyquist
frequency (times ``rolloff``, to leave room for the window's transition band), windowed by a Hann
window ``zero_crossings`` lobes wide. Output phases repeat every ``new`` samples, so there are only
``new`` distinct filters: one strided ``conv1d`` computes them all.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=16)
def sinc_kernels(orig: int, new: int, zero_crossings: int = 16, rolloff: float = 0.945) -> tuple[torch.Tensor, int]:
    """``new`` filters of ``2 * width + orig`` taps (float64) and ``width``, for rates reduced by their gcd."""
    cutoff = min(orig, new) * rolloff  # in cycles per ``orig`` input samples
    width = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # input times, in units of orig samples
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new  # each output phase's offset
    t = ((taps[None, :] + phases) * cutoff).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
    return sinc * window * (cutoff / orig), width


def resample(waveforms: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``(B, T)`` at ``orig`` Hz to ``(B, ceil(T * new / orig))`` at ``new`` Hz."""
    if orig == new:
        return waveforms
    divisor = math.gcd(int(orig), int(new))
    orig, new = int(orig) // divisor, int(new) // divisor
    kernels, width = sinc_kernels(orig, new)
    kernels = kernels.to(device=waveforms.device, dtype=waveforms.dtype)
    length = waveforms.shape[-1]
    padded = F.pad(waveforms[:, None, :], (width, width + orig))
    phased = F.conv1d(padded, kernels[:, None, :], stride=orig)  # (B, new, frames)
    out = phased.transpose(1, 2).reshape(waveforms.shape[0], -1)
    return out[:, : math.ceil(new * length / orig)]
