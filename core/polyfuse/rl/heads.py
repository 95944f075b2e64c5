"""Networks on the pipeline's trunk (encoders + fuser): MLP heads, a policy, an actor-critic."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from polyfuse.errors import PolyfuseError
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


class Memory(nn.Module):
    """A GRU cell over the fused features: what a policy remembers of its episode so far.

    In partially observed worlds (BabyAI's 7x7 view) the right move depends on
    what was seen before, which no memoryless policy can know. The state is
    ``(B, size)``; a row whose step starts an episode starts from zeros.

    The heads read the features and the new state side by side (``output_dim``
    is their sum), and the GRU reads the features layer-normalised. Without
    both, cloning BabyAI's bot grew the features a hundredfold in the first
    epoch, saturated the gates, and the policy stalled at the bot's most
    frequent action for epochs; with them, what the current view shows is
    learnt as fast as without a memory, and the memory adds what it does not.
    """

    def __init__(self, input_dim: int, size: int) -> None:
        super().__init__()
        self.size = int(size)
        self.output_dim = int(input_dim) + self.size
        self.norm = nn.LayerNorm(int(input_dim))
        self.cell = nn.GRUCell(int(input_dim), self.size)

    def initial(self, batch: int) -> torch.Tensor:
        """The state before any step: zeros ``(batch, size)``."""
        return torch.zeros(batch, self.size)

    def forward(
        self, features: torch.Tensor, state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: features ``(B, F)``, the state before it, ``starts`` ``(B,)`` bool.

        Returns what the heads read, ``(B, output_dim)``, and the new state.
        """
        state = self.cell(self.norm(features), state * ~starts.unsqueeze(-1))
        return torch.cat([features, state], dim=-1), state

    def unroll(self, features: torch.Tensor, state: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """``L`` steps of ``B`` sequences: features ``(L, B, F)``, starts ``(L, B)``; returns what the heads read,
        ``(L, B, output_dim)``."""
        outputs = []
        for step in range(features.shape[0]):
            output, state = self(features[step], state, starts[step])
            outputs.append(output)
        return torch.stack(outputs)


class PolicyNetwork(nn.Module):
    """Trunk + head (an optional :class:`Memory` between them): observations in, one output per action out.

    Also the frozen copy a target or reference network is made of. With a
    memory, outputs depend on the episode so far: use :meth:`step` and
    :meth:`unroll`, which carry the state; calling the network on
    observations alone is refused.
    """

    def __init__(self, trunk: MultimodalNetwork, head: nn.Module, memory: Memory | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.memory = memory
        self.head = head

    def forward(self, observations: Mapping[str, Any]) -> torch.Tensor:
        if self.memory is not None:
            raise PolyfuseError(MEMORY_NEEDS_STATE)
        return self.head(self.trunk(observations))

    def step(
        self, observations: Mapping[str, Any], state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and the new state after one step of ``B`` episodes (memoryless: ``state`` passes through)."""
        if self.memory is None:
            return self.head(self.trunk(observations)), state
        readout, state = self.memory(self.trunk(observations), state, starts)
        return self.head(readout), state

    def unroll(self, observations: Mapping[str, Any], state: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Outputs ``(L * B, n)`` of ``L`` steps of ``B`` sequences, rows time-major (row ``t * B + i``).

        ``state`` ``(B, size)`` is each sequence's memory before its first
        step, ``starts`` ``(L, B)`` where episodes begin within them.
        """
        return self.head(unrolled(self.trunk(observations), self.memory, state, starts))


MEMORY_NEEDS_STATE = (
    "this policy has a memory (optimizer.params.memory > 0): its actions depend on the episode so far, so it "
    "cannot score observations one at a time; act through the optimizer (act, after reset_memory), or train "
    "with memory: 0"
)


def unrolled(
    features: torch.Tensor, memory: Memory | None, state: torch.Tensor, starts: torch.Tensor
) -> torch.Tensor:
    """Time-major rows of features ``(L * B, F)`` through ``memory``: what the heads read (the features without one)."""
    if memory is None:
        return features
    steps, batch = starts.shape
    return memory.unroll(features.reshape(steps, batch, -1), state, starts).reshape(steps * batch, -1)


class ActorCritic(nn.Module):
    """Policy and value heads on one shared trunk, or each on its own trunk.

    ``forward`` returns ``(logits (B, num_logits), values (B,))``, running a
    shared trunk once. ``policy`` alone is what acting, warm start and a
    reference copy need.

    ``memory > 0`` puts a :class:`Memory` of that size after the shared trunk,
    read by both heads (it needs ``shared_trunk``); such a model is run
    through :meth:`step` and :meth:`unroll`, which carry its state.
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
        memory: int = 0,
    ) -> None:
        super().__init__()
        if memory and not shared_trunk:
            raise ValueError("a memory needs a shared trunk: both heads read it")
        actor_trunk = make_network()
        recurrent = Memory(actor_trunk.output_dim, memory) if memory else None
        head_input = recurrent.output_dim if recurrent is not None else actor_trunk.output_dim
        self.policy = PolicyNetwork(
            actor_trunk,
            mlp(head_input, hidden_sizes, num_logits, activation=activation, ortho_init=ortho_init,
                output_gain=0.01),
            recurrent,
        )
        self.critic_trunk: MultimodalNetwork | None = None if shared_trunk else make_network()
        value_input = self.critic_trunk.output_dim if self.critic_trunk is not None else head_input
        self.value_head = mlp(value_input, hidden_sizes, 1, activation=activation, ortho_init=ortho_init,
                              output_gain=1.0)

    @property
    def shared_trunk(self) -> bool:
        return self.critic_trunk is None

    @property
    def memory(self) -> Memory | None:
        return self.policy.memory

    def initial_state(self, batch: int) -> torch.Tensor:
        """The memory state before any step, ``(batch, memory)``; ``(batch, 0)`` for a memoryless model."""
        return self.memory.initial(batch) if self.memory is not None else torch.zeros(batch, 0)

    def step(
        self, observations: Mapping[str, Any], state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, values, new state)`` of one step of ``B`` episodes (memoryless: ``forward`` and the state as given)."""
        if self.memory is None:
            return (*self(observations), state)
        readout, state = self.memory(self.policy.trunk(observations), state, starts)
        return self.policy.head(readout), self.value_head(readout).squeeze(-1), state

    def unroll(
        self, observations: Mapping[str, Any], state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)`` of ``L`` steps of ``B`` sequences, rows time-major: see :meth:`PolicyNetwork.unroll`."""
        if self.memory is None:
            return self(observations)
        features = unrolled(self.policy.trunk(observations), self.memory, state, starts)
        return self.policy.head(features), self.value_head(features).squeeze(-1)

    def forward(self, observations: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory is not None:
            raise PolyfuseError(MEMORY_NEEDS_STATE)
        features = self.policy.trunk(observations)
        logits = self.policy.head(features)
        if self.critic_trunk is not None:
            features = self.critic_trunk(observations)
        return logits, self.value_head(features).squeeze(-1)

    def logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        return self.policy(observations)

    def value(self, observations: Mapping[str, Any]) -> torch.Tensor:
        if self.memory is not None:
            raise PolyfuseError(MEMORY_NEEDS_STATE)
        trunk = self.critic_trunk if self.critic_trunk is not None else self.policy.trunk
        return self.value_head(trunk(observations)).squeeze(-1)
