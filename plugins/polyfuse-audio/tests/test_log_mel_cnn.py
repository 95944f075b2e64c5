"""The ``log-mel-cnn`` encoder: the encoder contracts, audio batches, spaces, and the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from audio_signals import tone

from polyfuse.errors import PolyfuseError
from polyfuse.feature_cache import CachedEncoder, FeatureCache
from polyfuse.testing import check_encoder, check_spatial_encoder
from polyfuse_audio.plugin import LogMelCNNConfig, build_log_mel_cnn
from polyfuse_audio.spaces import Audio

SPACE = Audio(4000, 8000)
SMALL = {"sample_rate": 8000, "n_mels": 20, "window_ms": 32, "hop_ms": 20, "channels": [4, 8], "output_dim": 16}


def build(space=SPACE, **params):
    encoder = build_log_mel_cnn(LogMelCNNConfig.model_validate({**SMALL, **params}), space=space)
    encoder.modality = "speech"
    return encoder


def clips(count=3, length=4000, rate=8000):
    return np.stack([tone(300 + 400 * i, rate, length / rate) for i in range(count)])


def test_follows_the_encoder_contracts():
    check_encoder(build(), clips())
    check_spatial_encoder(build(), clips())
    check_encoder(build(trainable=False), clips())


def test_features_and_map_shapes():
    encoder = build()
    features, feature_map = encoder.forward_spatial(clips())
    assert features.shape == (3, 16) and feature_map.shape == (3, *encoder.feature_map_shape) == (3, 8, 1, 4)


def test_input_at_another_rate_is_resampled_to_the_encoders():
    at_8k = build(sample_rate=8000, space=Audio(4000, 8000), trainable=False)
    at_16k = build(sample_rate=8000, space=Audio(8000, 16000), trainable=False)
    at_16k.load_state_dict(at_8k.state_dict())
    slow, fast = tone(500, 8000, 0.5), tone(500, 16000, 0.5)
    assert torch.allclose(at_8k(slow[None]), at_16k(fast[None]), atol=0.05)


def test_int16_lists_and_bad_audio():
    encoder = build(trainable=False)
    floats = clips(2)
    as_int16 = np.round(floats * 32767).astype(np.int16)
    assert torch.allclose(encoder(floats), encoder(as_int16), atol=1e-3)
    ragged = [floats[0], floats[1][:3000]]  # shorter clips are padded with silence
    padded = np.stack([floats[0], np.concatenate([floats[1][:3000], np.zeros(1000, np.float32)])])
    assert torch.allclose(encoder(ragged), encoder(padded), atol=1e-5)
    broken = floats.copy()
    broken[1, 5] = np.nan
    with pytest.raises(ValueError, match="modality 'speech': sample 1 contains NaN"):
        encoder(broken)
    with pytest.raises(ValueError, match=r"expected a batch of mono waveforms \(B, T\)"):
        encoder(floats[:, :, None])
    with pytest.raises(ValueError, match="not audio samples"):
        encoder(np.array([["a", "b"]]))


def test_refuses_spaces_that_are_not_audio():
    from gymnasium import spaces

    with pytest.raises(PolyfuseError, match=r"log-mel-cnn reads audio.*Box\(0, 255, \(8, 8, 1\)"):
        build(space=spaces.Box(0, 255, (8, 8, 1), np.uint8))
    with pytest.raises(PolyfuseError, match="above the Nyquist frequency"):
        build(f_max=6000.0)


def test_frozen_features_are_cached_and_follow_changed_weights():
    encoder = build(trainable=False)
    store = FeatureCache(memory_items=16)
    cached = CachedEncoder(encoder, store)
    first = cached(clips())
    again = cached(clips())
    assert torch.equal(first, again) and cached.stats.misses == 3 and cached.stats.hits == 3
    with torch.no_grad():
        encoder.head[1].bias.add_(1.0)
    assert not torch.allclose(cached(clips()), first) and cached.stats.misses == 6
    with pytest.raises(NotImplementedError):
        build().identity()


def test_audio_space():
    space = Audio(16000, 16000)
    assert space.seconds == 1.0 and space.sample(). dtype == np.float32 and space.contains(space.sample())
    assert space == Audio(16000, 16000) and space != Audio(16000, 8000)
    assert repr(space) == "Audio(16000 samples, 16000 Hz, float32)"
    assert Audio(10, 8000, np.int16).high[0] == 32767
    with pytest.raises(ValueError, match="float32"):
        Audio(10, 8000, np.float64)
