"""The actor-critic: a multimodal trunk (encoders + fuser), a policy head and a value head."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

from polyfuse.errors import PolyfuseError
from polyfuse.network import MultimodalNetwork

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass(frozen=True)
class ActionLayout:
    """How a ``Discrete`` or ``MultiDiscrete`` space maps to logits and back.

    ``nvec`` are the sizes of the independent dimensions (one for
    ``Discrete``), ``start`` their first values.
    """

    nvec: tuple[int, ...]
    start: tuple[int, ...]
    discrete: bool

    @classmethod
    def of(cls, space: Any) -> ActionLayout:
        if isinstance(space, gymnasium.spaces.Discrete):
            return cls((int(space.n),), (int(space.start),), True)
        if isinstance(space, gymnasium.spaces.MultiDiscrete):
            if space.nvec.ndim != 1:
                raise PolyfuseError(
                    f"ppo supports MultiDiscrete action spaces with a 1-D nvec; this one has shape {space.nvec.shape}"
                )
            return cls(tuple(int(n) for n in space.nvec), tuple(int(s) for s in space.start), False)
        raise PolyfuseError(
            f"ppo supports Discrete and MultiDiscrete action spaces; this environment's is {space}"
        )

    @property
    def num_logits(self) -> int:
        return sum(self.nvec)

    def to_env(self, indices: torch.Tensor) -> np.ndarray:
        """Zero-based ``(B, D)`` indices to the environment's actions: ``(B,)`` or ``(B, D)``, offset by start."""
        actions = indices.cpu().numpy().astype(np.int64) + np.asarray(self.start, dtype=np.int64)
        return actions[:, 0] if self.discrete else actions


def mlp(
    input_dim: int, hidden_sizes: Sequence[int], output_dim: int, activation: str, ortho_init: bool, output_gain: float
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in hidden_sizes:
        linear = nn.Linear(width, hidden)
        if ortho_init:
            _orthogonal(linear, math.sqrt(2))
        layers += [linear, ACTIVATIONS[activation]()]
        width = hidden
    head = nn.Linear(width, output_dim)
    if ortho_init:
        _orthogonal(head, output_gain)
    layers.append(head)
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> None:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)


class PolicyNetwork(nn.Module):
    """Trunk + policy head: raw observations in, action logits out (also the frozen reference policy)."""

    def __init__(self, trunk: MultimodalNetwork, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, observations: Mapping[str, Any]) -> torch.Tensor:
        return self.head(self.trunk(observations))


class ActorCritic(nn.Module):
    """Policy and value heads on one shared trunk, or each on its own trunk.

    ``forward`` returns ``(logits (B, sum(nvec)), values (B,))``, running a
    shared trunk once.
    """

    def __init__(
        self,
        make_network: Callable[[], MultimodalNetwork],
        layout: ActionLayout,
        *,
        shared_trunk: bool,
        hidden_sizes: Sequence[int],
        activation: str,
        ortho_init: bool,
    ) -> None:
        super().__init__()
        self.layout = layout
        actor_trunk = make_network()
        self.policy = PolicyNetwork(
            actor_trunk, mlp(actor_trunk.output_dim, hidden_sizes, layout.num_logits, activation, ortho_init, 0.01)
        )
        self.critic_trunk: MultimodalNetwork | None = None if shared_trunk else make_network()
        value_input = (self.critic_trunk or actor_trunk).output_dim
        self.value_head = mlp(value_input, hidden_sizes, 1, activation, ortho_init, 1.0)

    @property
    def shared_trunk(self) -> bool:
        return self.critic_trunk is None

    def forward(self, observations: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.policy.trunk(observations)
        logits = self.policy.head(features)
        if self.critic_trunk is not None:
            features = self.critic_trunk(observations)
        return logits, self.value_head(features).squeeze(-1)

    def logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        return self.policy(observations)

    def value(self, observations: Mapping[str, Any]) -> torch.Tensor:
        trunk = self.critic_trunk if self.critic_trunk is not None else self.policy.trunk
        return self.value_head(trunk(observations)).squeeze(-1)
