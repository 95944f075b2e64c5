"""Encoders + fuser as one module: raw multimodal observations in, one feature vector out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from polyfuse.components import Kind
from polyfuse.config import PipelineConfig
from polyfuse.encoding import Encoder
from polyfuse.errors import PolyfuseError
from polyfuse.fusion import Fuser, PresenceMask
from polyfuse.registry import Registry, default_registry


class MultimodalNetwork(nn.Module):
    """Reads each modality from its observation key, encodes it, and fuses the features.

    A modality whose observation key is absent from a batch is passed to the
    fuser as missing, so a policy keeps working when a sensor drops out.
    """

    def __init__(self, encoders: Mapping[str, Encoder], observation_keys: Mapping[str, str], fuser: Fuser) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.observation_keys = dict(observation_keys)
        self.fuser = fuser
        self.output_dim = fuser.output_dim

    def encode(self, observations: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-modality features for the modalities present in ``observations``."""
        features = {}
        for modality, encoder in self.encoders.items():
            key = self.observation_keys[modality]
            if key in observations:
                features[modality] = encoder(observations[key])
        return features

    def forward(self, observations: Mapping[str, Any], present: PresenceMask | None = None) -> torch.Tensor:
        return self.fuser(self.encode(observations), present)


def build_network(
    config: PipelineConfig, observation_space: Any, registry: Registry | None = None
) -> MultimodalNetwork:
    """Build encoders from ``config.modalities`` and the fuser on their output dims.

    ``observation_space`` is the single-environment gymnasium Dict space; each
    encoder's factory receives the subspace of the key it reads.
    """
    registry = registry or default_registry()
    spaces = getattr(observation_space, "spaces", None)
    if spaces is None:
        raise PolyfuseError(
            f"the environment's observation space is {observation_space}; polyfuse needs a gymnasium Dict space "
            "(one entry per modality)"
        )
    encoders: dict[str, Encoder] = {}
    keys: dict[str, str] = {}
    for modality, modality_config in config.modalities.items():
        key = modality_config.key or modality
        if key not in spaces:
            raise PolyfuseError(
                f"modalities.{modality}.key: the environment has no observation key {key!r}; "
                f"its keys are {sorted(spaces)}"
            )
        ref = modality_config.encoder
        encoders[modality] = registry.create(Kind.ENCODER, ref.name, ref.params, space=spaces[key])
        keys[modality] = key
    input_dims = {modality: encoder.output_dim for modality, encoder in encoders.items()}
    fuser = registry.create(Kind.FUSER, config.fuser.name, config.fuser.params, input_dims=input_dims)
    return MultimodalNetwork(encoders, keys, fuser)
