"""Registration of the ``dqn`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_dqn.dqn`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from polyfuse import hookimpl
from polyfuse.declarations import learns_from
from polyfuse.rl.configs import OffPolicyConfig
from pydantic import Field, model_validator

if TYPE_CHECKING:
    from polyfuse_dqn.dqn import DQN


class DQNConfig(OffPolicyConfig):
    """Params of the ``dqn`` optimizer (replay, n-step and loop params from :class:`OffPolicyConfig`).

    Step counts (``learning_starts``, ``exploration_steps``) are environment
    steps summed over the vector envs.
    """

    learning_rate: float = Field(5e-4, gt=0, le=1, description="Adam learning rate.")
    target_update_interval: int = Field(
        250,
        gt=0,
        description="Gradient steps between target-network updates (with tau < 1, 1 is usual).",
    )
    tau: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Target update coefficient: 1 copies the online network (hard update); below 1 is "
        "Polyak averaging, target <- tau * online + (1 - tau) * target.",
    )
    double_dqn: bool = Field(
        True,
        description="Double DQN (van Hasselt et al. 2016): the online network picks the next action, the "
        "target network values it. False: the target network's max.",
    )
    epsilon_start: float = Field(1.0, ge=0, le=1, description="Exploration rate at the first step.")
    epsilon_end: float = Field(0.05, ge=0, le=1, description="Exploration rate once the schedule is over.")
    exploration_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Fraction of exploration_steps over which epsilon falls linearly from epsilon_start "
        "to epsilon_end.",
    )
    exploration_steps: int | None = Field(
        None,
        gt=0,
        description="The environment steps exploration_fraction refers to. null: the run's budget "
        "(trainer.total_steps) when it counts environment steps, so epsilon reaches epsilon_end at "
        "exploration_fraction of the run; with another trainer.budget_unit, set it.",
    )
    huber_delta: float = Field(
        1.0, gt=0, description="Huber loss threshold: quadratic below, linear above (1 = smooth L1)."
    )
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64],
        max_length=8,
        description="Widths of the MLP head's hidden layers (ReLU) between the fused features and the "
        "Q-values; [] is a linear head.",
    )

    @model_validator(mode="after")
    def _epsilon_falls(self) -> DQNConfig:
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"epsilon_end ({self.epsilon_end}) must not exceed epsilon_start ({self.epsilon_start})"
            )
        return self


@learns_from("env")
def build_dqn(config: DQNConfig) -> DQN:
    from polyfuse_dqn.dqn import DQN

    return DQN(config)


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("dqn", build_dqn, config=DQNConfig,
             description="Deep Q-learning: double DQN, n-step returns, replay of raw multimodal observations")
