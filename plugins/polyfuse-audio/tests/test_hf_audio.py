"""The ``hf-audio`` encoder on tiny, randomly initialised models of real architectures, saved and loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from audio_signals import tone
from pydantic import ValidationError

from polyfuse.errors import PolyfuseError
from polyfuse.testing import check_encoder
from polyfuse_audio.plugin import HFAudioConfig, build_hf_audio
from polyfuse_audio.spaces import Audio

transformers = pytest.importorskip("transformers", reason="hf-audio needs transformers (pip install 'polyfuse-audio[hf]')")


@pytest.fixture(scope="module")
def wav2vec2_folder(tmp_path_factory):
    """A 2-layer wav2vec2 (hidden size 32) and its feature extractor, as save_pretrained writes them."""
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer", layerdrop=0.0,  # no layer skipped in training
    )
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    """A tiny Whisper (1-second windows) and its feature extractor: the encoder half is used."""
    folder = tmp_path_factory.mktemp("tiny-whisper")
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=20, max_source_positions=50, max_target_positions=16,
        vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=2,
    )
    transformers.WhisperModel(config).save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=20, chunk_length=1).save_pretrained(folder)
    return folder


def build(folder, space=Audio(8000, 8000), **params):
    encoder = build_hf_audio(HFAudioConfig.model_validate({"model": str(folder), **params}), space=space)
    encoder.modality = "speech"
    return encoder


def clips(rate=8000, count=3):
    return np.stack([tone(200 + 300 * i, rate, 1.0) for i in range(count)])


def test_wav2vec2_by_path_follows_the_encoder_contract(wav2vec2_folder):
    encoder = build(wav2vec2_folder)
    assert encoder.output_dim == 32 and encoder.model_rate == 16000 and not encoder.trainable
    features = encoder(clips())
    assert features.shape == (3, 32) and torch.isfinite(features).all()
    check_encoder(encoder, clips())
    assert encoder.identity() == encoder.identity() and "tiny-wav2vec2" in encoder.identity()


def test_input_is_resampled_to_the_models_rate(wav2vec2_folder):
    at_8k = build(wav2vec2_folder, space=Audio(8000, 8000))
    at_16k = build(wav2vec2_folder, space=Audio(16000, 16000))
    same = at_8k(clips(8000)[:1]), at_16k(clips(16000)[:1])
    other = at_16k(clips(16000)[1:2])
    assert torch.allclose(*same, atol=0.05) and not torch.allclose(same[1], other, atol=0.05)


def test_layer_chooses_the_hidden_state(wav2vec2_folder):
    first, last = build(wav2vec2_folder, layer=0), build(wav2vec2_folder, layer=-1)
    assert not torch.allclose(first(clips()), last(clips()))
    with pytest.raises(PolyfuseError, match="params.layer 5 is out of range.*which has 2 layers"):
        build(wav2vec2_folder, layer=5)


def test_fine_tuning_sends_gradients_into_the_model(wav2vec2_folder):
    encoder = build(wav2vec2_folder, trainable=True)
    check_encoder(encoder, clips())
    with pytest.raises(NotImplementedError):
        encoder.identity()


def test_whisper_encoder(whisper_folder):
    encoder = build(whisper_folder)
    assert encoder.input_name == "input_features" and encoder.output_dim == 32
    check_encoder(encoder, clips())


def test_a_missing_model_names_the_path_and_how_to_get_one(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValidationError, match=r"no model folder at .*no-such-model.*save_pretrained"):
        HFAudioConfig(model=str(missing))
    with pytest.raises(PolyfuseError, match=r"cannot load 'nobody/not-in-the-cache'.*save_pretrained"):
        build("nobody/not-in-the-cache")


def test_refuses_spaces_that_are_not_audio(wav2vec2_folder):
    from gymnasium import spaces

    with pytest.raises(PolyfuseError, match="hf-audio reads audio"):
        build(wav2vec2_folder, space=spaces.Text(10))
