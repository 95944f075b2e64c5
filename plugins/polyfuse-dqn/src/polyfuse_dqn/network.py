"""The Q-network: the pipeline's encoders and fuser, then an MLP head with one output per action."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from polyfuse.network import MultimodalNetwork


class QNetwork(nn.Module):
    """``Q(s, ·)`` for a batch of raw dict observations: ``(B, num_actions)``."""

    def __init__(self, body: MultimodalNetwork, num_actions: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.body = body
        layers: list[nn.Module] = []
        width = int(body.output_dim)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
            width = int(hidden)
        layers.append(nn.Linear(width, int(num_actions)))
        self.head = nn.Sequential(*layers)
        self.num_actions = int(num_actions)

    def forward(self, observations: Mapping[str, Any]) -> torch.Tensor:
        features = self.body(observations)
        return self.head(features.float())
