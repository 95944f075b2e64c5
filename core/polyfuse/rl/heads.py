"""Networks on the pipeline's trunk (encoders + fuser): MLP heads, a policy, an actor-critic."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from polyfuse.network import MultimodalNetwork

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    input_dim: int, hidden_sizes: Sequence[int], output_dim: int, *, activation: str, ortho_init: bool = False,
    output_gain: float = 1.0,
) -> nn.Sequential:
    """Linear layers with ``activation`` between them; ``[]`` hidden sizes is one linear layer.

    ``ortho_init``: orthogonal weights and zero biases, gain sqrt(2) for the
    hidden layers and ``output_gain`` for the last one (Baselines' and
    CleanRL's initialisation); otherwise PyTorch's default.
    """
    layers: list[nn.Module] = []
    width = int(input_dim)
    for hidden in hidden_sizes:
        linear = nn.Linear(width, int(hidden))
        if ortho_init:
            _orthogonal(linear, math.sqrt(2))
        layers += [linear, ACTIVATIONS[activation]()]
        width = int(hidden)
    head = nn.Linear(width, int(output_dim))
    if ortho_init:
        _orthogonal(head, output_gain)
    layers.append(head)
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> None:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)


class PolicyNetwork(nn.Module):
    """Trunk + head: raw observations in, one output per action out (logits, or Q-values).

    Also the frozen copy a target or reference network is made of.
    """

    def __init__(self, trunk: MultimodalNetwork, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, observations: Mapping[str, Any]) -> torch.Tensor:
        return self.head(self.trunk(observations))


class ActorCritic(nn.Module):
    """Policy and value heads on one shared trunk, or each on its own trunk.

    ``forward`` returns ``(logits (B, num_logits), values (B,))``, running a
    shared trunk once. ``policy`` alone is what acting, warm start and a
    reference copy need.
    """

    def __init__(
        self,
        make_network: Callable[[], MultimodalNetwork],
        num_logits: int,
        *,
        shared_trunk: bool,
        hidden_sizes: Sequence[int],
        activation: str,
        ortho_init: bool,
    ) -> None:
        super().__init__()
        actor_trunk = make_network()
        self.policy = PolicyNetwork(
            actor_trunk,
            mlp(actor_trunk.output_dim, hidden_sizes, num_logits, activation=activation, ortho_init=ortho_init,
                output_gain=0.01),
        )
        self.critic_trunk: MultimodalNetwork | None = None if shared_trunk else make_network()
        value_input = (self.critic_trunk or actor_trunk).output_dim
        self.value_head = mlp(value_input, hidden_sizes, 1, activation=activation, ortho_init=ortho_init,
                              output_gain=1.0)

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
