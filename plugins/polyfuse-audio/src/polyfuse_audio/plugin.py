"""Registers the ``log-mel-cnn`` and ``hf-audio`` encoders; torch and transformers load only when one is built.

The spoken DigitsVQA environment is registered apart, through the ``polyfuse.environments``
entry-point group (:mod:`polyfuse_audio.envs`), so that it is made by id without this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import accepts_space, offers_feature_map

HOW_TO_GET_ONE = (
    "this machine cannot download models: on one with internet access, save one to a folder with "
    "`python -c \"from transformers import AutoModel, AutoFeatureExtractor as F; n='facebook/wav2vec2-base'; "
    "AutoModel.from_pretrained(n).save_pretrained('wav2vec2-base'); F.from_pretrained(n).save_pretrained("
    "'wav2vec2-base')\"` (or `hf download facebook/wav2vec2-base` into the Hugging Face cache), copy it "
    "here and give its path in params.model"
)


def _audio_space(space: Any) -> str | None:
    from polyfuse_audio.spaces import audio_space_problem

    return audio_space_problem(space)


class LogMelCNNConfig(ComponentConfig):
    """Params of the ``log-mel-cnn`` encoder."""

    sample_rate: int = Field(16000, ge=1000, le=192000,
                             description="Rate (Hz) the front end runs at; inputs at other rates are resampled to it")
    window_ms: float = Field(25.0, gt=0, le=1000, description="STFT window length in milliseconds (Hann window)")
    hop_ms: float = Field(10.0, gt=0, le=1000, description="Step between STFT frames in milliseconds")
    n_mels: int = Field(64, ge=4, le=512, description="Number of mel bands")
    f_min: float = Field(0.0, ge=0, description="Lowest frequency (Hz) of the mel filterbank")
    f_max: float | None = Field(None, gt=0, description="Highest frequency (Hz); null = sample_rate / 2")
    normalize: bool = Field(True, description="Scale each clip to unit variance and remove each mel band's mean "
                           "over time (loudness, voice and channel)")
    channels: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=1, max_length=8,
                                description="Output channels of each stride-2 convolution along time (kernel 3)")
    pool_size: int = Field(4, ge=1, le=64, description="Steps of time the last map is average-pooled to")
    output_dim: int = Field(128, gt=0, le=65536, description="Width of the last layer (= feature width)")
    trainable: bool = Field(True, description="Train the CNN; false = frozen random features (cached)")

    @field_validator("channels")
    @classmethod
    def _positive(cls, channels: list[int]) -> list[int]:
        if any(c < 1 or c > 4096 for c in channels):
            raise ValueError("every channel count must be in 1..4096")
        return channels


class HFAudioConfig(ComponentConfig):
    """Params of the ``hf-audio`` encoder."""

    model: str = Field(min_length=1, max_length=1000,
                       description="A local folder written by save_pretrained (model + feature extractor), or a "
                       "hub id already in the Hugging Face cache; nothing is downloaded")
    layer: int = Field(-1, description="Hidden state averaged over time: -1 the model's output, 0 its input embeddings, "
                       "k the k-th layer's output")
    trainable: bool = Field(False, description="Fine-tune the model; false = frozen (eval mode, features cached)")
    batch_size: int = Field(16, gt=0, le=4096, description="Clips per forward pass when frozen")

    @field_validator("model")
    @classmethod
    def _folder_exists(cls, model: str) -> str:
        path = Path(model).expanduser()
        if (path.is_absolute() or model.startswith(".")) and not path.is_dir():
            raise ValueError(f"no model folder at {str(path)!r}; {HOW_TO_GET_ONE}")
        return model


@offers_feature_map(lambda config: True)
@accepts_space(_audio_space)
def build_log_mel_cnn(config: LogMelCNNConfig, space: Any = None) -> Any:
    from polyfuse_audio.log_mel_cnn import LogMelCNNEncoder

    return LogMelCNNEncoder.from_space(config, space)


@accepts_space(_audio_space)
def build_hf_audio(config: HFAudioConfig, space: Any = None) -> Any:
    from polyfuse_audio.hf_audio import HFAudioEncoder

    return HFAudioEncoder.from_config(config, space)


@hookimpl
def register_encoders(register):  # type: ignore[no-untyped-def]
    register("log-mel-cnn", build_log_mel_cnn, config=LogMelCNNConfig,
             description="Log-mel spectrogram (torch, any input rate resampled) and a small CNN, for audio")
    register("hf-audio", build_hf_audio, config=HFAudioConfig,
             description="Any Hugging Face audio model (wav2vec2, HuBERT, Whisper encoder...) from a local folder")
