"""The log-mel front end and the resampler against hand-computed references (no librosa, no torchaudio)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from audio_signals import peak_frequency, tone
from scipy.signal import resample_poly

from polyfuse_audio.mel import LogMel, hz_to_mel, mel_filterbank, mel_to_hz
from polyfuse_audio.resample import resample


def test_mel_scale_is_htk_and_inverts():
    assert float(hz_to_mel(torch.tensor(1000.0))) == pytest.approx(999.99, abs=0.05)  # 2595 log10(1 + 1000/700)
    hz = torch.tensor([0.0, 440.0, 4000.0])
    assert torch.allclose(mel_to_hz(hz_to_mel(hz)), hz, atol=1e-3)


def test_filterbank_triangles_peak_at_their_centres_and_tile_the_range():
    bank = mel_filterbank(n_fft=512, n_mels=20, sample_rate=16000, f_min=0.0, f_max=8000.0)
    assert bank.shape == (20, 257) and bank.min() >= 0 and bank.max() <= 1
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0))), 22)[1:-1])
    peaks = bank.argmax(dim=1).double() * 8000 / 256
    assert torch.allclose(peaks, centres.double(), atol=8000 / 256)  # within one FFT bin
    assert (bank[:, 1:-1].sum(dim=0) > 0).all(), "every bin between 0 Hz and Nyquist is covered"
    with pytest.raises(ValueError, match="Nyquist"):
        mel_filterbank(512, 20, 16000, 0.0, 9000.0)


@pytest.mark.parametrize("frequency", [300.0, 1000.0, 3000.0])
def test_a_tones_energy_lands_in_the_mel_band_centred_on_it(frequency):
    front = LogMel(16000, window_ms=32, hop_ms=10, n_mels=40, normalize=False)
    log_mel = front(torch.from_numpy(tone(frequency, 16000))[None])[0]  # (40, frames)
    loudest = int(log_mel[:, 10:-10].mean(dim=1).argmax())
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0))), 42)[1:-1])
    assert loudest == int((centres - frequency).abs().argmin())


def test_silence_and_loudness_do_not_change_normalised_features():
    front = LogMel(8000, window_ms=32, hop_ms=20, n_mels=40)
    speech = torch.from_numpy(tone(500, 8000) + tone(1300, 8000, amplitude=0.2))[None]
    assert torch.allclose(front(speech), front(0.1 * speech), atol=1e-3)
    silent = front(torch.zeros(1, 4000))
    assert torch.isfinite(silent).all()


@pytest.mark.parametrize(("orig", "new", "frequency"), [(8000, 16000, 1000.0), (44100, 16000, 3000.0),
                                                         (16000, 8000, 440.0), (22050, 8000, 2500.0)])
def test_resampling_keeps_a_tones_frequency_and_matches_scipy(orig, new, frequency):
    signal = tone(frequency, orig, seconds=0.5)
    ours = resample(torch.from_numpy(signal)[None].double(), orig, new)[0].numpy()
    assert len(ours) == int(np.ceil(len(signal) * new / orig))
    assert peak_frequency(ours, new) == pytest.approx(frequency, abs=new / len(ours) * 1.01)
    reference = resample_poly(signal.astype(np.float64), new // np.gcd(orig, new), orig // np.gcd(orig, new))
    middle = slice(len(ours) // 10, -len(ours) // 10)  # the edges differ by each method's padding
    assert np.abs(ours[middle] - reference[: len(ours)][middle]).max() < 0.01


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    above = tone(6000.0, 16000)  # above 8 kHz audio's 4 kHz Nyquist: would alias to 2 kHz
    out = resample(torch.from_numpy(above)[None], 16000, 8000)[0].numpy()
    assert np.abs(out[200:-200]).max() < 0.01 * np.abs(above).max()


def test_resampling_a_batch_equals_each_clip_alone():
    batch = torch.randn(3, 1000)
    together = resample(batch, 8000, 16000)
    for row in range(3):
        assert torch.allclose(together[row], resample(batch[row : row + 1], 8000, 16000)[0], atol=1e-6)
