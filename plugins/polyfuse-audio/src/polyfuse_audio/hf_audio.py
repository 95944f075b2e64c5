"""``hf-audio``: any Hugging Face audio model (wav2vec2, HuBERT, WavLM, Whisper's encoder...) as an encoder.

The model and its feature extractor are loaded with ``transformers``' Auto classes from a local
folder (``save_pretrained``) or the Hugging Face cache, never downloaded at run time. Waveforms are
resampled to the feature extractor's rate, turned into the model's inputs by the extractor
(normalised ``input_values``, or Whisper's log-mel ``input_features``), and the chosen hidden
state is averaged over time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from polyfuse.encoding import Encoder, weights_digest
from polyfuse.errors import PolyfuseError
from polyfuse.feature_cache import WeightsWatch
from polyfuse_audio.plugin import HOW_TO_GET_ONE
from polyfuse_audio.resample import resample
from polyfuse_audio.spaces import audio_space_problem
from polyfuse_audio.waveforms import waveform_batch


def load_model(model: str) -> tuple[Any, Any]:
    """The feature extractor and the model (its encoder, for encoder-decoders such as Whisper)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoFeatureExtractor, AutoModel
    except ImportError:
        raise PolyfuseError("hf-audio needs transformers: pip install 'polyfuse-audio[hf]'") from None
    local = Path(model).expanduser()
    if local.is_absolute() or model.startswith(".") or local.exists():
        if not local.is_dir():
            raise PolyfuseError(f"hf-audio: no model folder at {str(local)!r}; {HOW_TO_GET_ONE}")
        model = str(local)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(model, local_files_only=True)
        network = AutoModel.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PolyfuseError(f"hf-audio: cannot load {model!r} ({type(exc).__name__}: {str(exc)[:300]}); "
                            f"{HOW_TO_GET_ONE}") from None
    if getattr(network.config, "is_encoder_decoder", False):
        network = network.get_encoder()
    return extractor, network


class HFAudioEncoder(Encoder):
    """Time-averaged hidden states of a transformers audio model; frozen (cached) unless ``trainable``."""

    def __init__(self, extractor: Any, model: Any, name: str, *, input_rate: int, layer: int,
                 trainable: bool, batch_size: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.model = model
        self.name = name
        self.input_rate = int(input_rate)
        self.model_rate = int(extractor.sampling_rate)
        self.input_name = extractor.model_input_names[0]
        self.layer = layer
        self.batch_size = batch_size
        self.model.requires_grad_(trainable)
        self.model.train(trainable)
        self.output_dim = int(model.config.hidden_size)
        self._weights = WeightsWatch(self.model)
        self._digest: tuple[Any, str] | None = None

    @classmethod
    def from_config(cls, config: Any, space: Any) -> HFAudioEncoder:
        problem = audio_space_problem(space)
        if problem is not None:
            raise PolyfuseError(f"hf-audio reads {problem}, but this observation's space is {space}")
        extractor, model = load_model(config.model)
        layers = getattr(model.config, "num_hidden_layers", None) or model.config.encoder_layers
        if not -layers - 1 <= config.layer <= layers:
            raise PolyfuseError(f"hf-audio: params.layer {config.layer} is out of range for {config.model!r}, "
                                f"which has {layers} layers (0 = its input embeddings, -1 = the last)")
        return cls(extractor, model, config.model, input_rate=space.sample_rate, layer=config.layer,
                   trainable=config.trainable, batch_size=config.batch_size)

    def train(self, mode: bool = True) -> HFAudioEncoder:
        """A frozen model stays in eval mode (no dropout), whatever the policy around it does."""
        if self.trainable:
            return super().train(mode)
        self.training = mode
        return self

    def forward(self, batch: Any) -> torch.Tensor:
        waveforms = resample(waveform_batch(batch, self.modality), self.input_rate, self.model_rate)
        if self.trainable:
            return self._encode(waveforms)
        with torch.no_grad():
            return torch.cat([self._encode(chunk) for chunk in waveforms.split(self.batch_size)])

    def _encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        padding = "max_length" if self.input_name == "input_features" else "longest"  # Whisper: fixed 30 s
        inputs = self.extractor(list(waveforms.cpu().numpy()), sampling_rate=self.model_rate,
                                return_tensors="pt", padding=padding)
        device = next(self.model.parameters()).device
        extra = {"attention_mask": inputs["attention_mask"].to(device)} if "attention_mask" in inputs else {}
        if self.layer == -1:  # the model's output, after any final layer norm (not in hidden_states)
            hidden = self.model(inputs[self.input_name].to(device), **extra).last_hidden_state
        else:
            hidden = self.model(inputs[self.input_name].to(device), output_hidden_states=True, **extra
                                ).hidden_states[self.layer]
        return hidden.mean(dim=1).float()

    def identity(self) -> str:
        if self.trainable:
            raise NotImplementedError("a fine-tuned model changes as it trains; its features cannot be cached")
        fingerprint = self._weights.fingerprint()
        if self._digest is None or self._digest[0] != fingerprint:
            self._digest = (fingerprint, weights_digest(self.model))
        return (f"hf-audio:{self.name}:layer={self.layer}:input_rate={self.input_rate}:"
                f"{self.extractor.to_json_string()}:{self._digest[1]}")
