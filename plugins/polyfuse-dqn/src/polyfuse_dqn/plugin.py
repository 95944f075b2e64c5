"""Registration of the ``dqn`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_dqn.dqn`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from polyfuse import ComponentConfig, hookimpl

if TYPE_CHECKING:
    from polyfuse_dqn.dqn import DQN


class DQNConfig(ComponentConfig):
    """Params of the ``dqn`` optimizer.

    Step counts (``learning_starts``, ``exploration_steps``) are environment
    steps summed over the vector envs, like ``trainer.total_steps``.
    """

    learning_rate: float = Field(5e-4, gt=0, le=1, description="Adam learning rate.")
    buffer_size: int = Field(
        50_000, gt=0, description="Replay buffer capacity in transitions; the oldest are overwritten first."
    )
    learning_starts: int = Field(
        1_000, ge=0, description="Environment steps collected (exploring) before the first gradient step."
    )
    batch_size: int = Field(
        64, gt=0, description="Transitions per gradient step, sampled uniformly with replacement."
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    n_step: int = Field(
        1,
        ge=1,
        le=100,
        description="Rewards summed before bootstrapping (n-step returns). An episode end inside the n steps "
        "cuts the sum: termination stops bootstrapping, truncation bootstraps from the final observation.",
    )
    train_frequency: int = Field(
        1,
        gt=0,
        description="Vector-env steps per iterate(); each iterate collects train_frequency * num_envs "
        "transitions, then makes gradient_steps updates.",
    )
    gradient_steps: int = Field(
        1, gt=0, description="Gradient steps per iterate() once learning has started."
    )
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
        description="The step budget exploration_fraction refers to. null: the run's step budget "
        "(trainer.total_steps, which the trainer tells the optimizer), so epsilon reaches epsilon_end at "
        "exploration_fraction of the run.",
    )
    max_grad_norm: float = Field(10.0, gt=0, description="Gradients are clipped to this global L2 norm.")
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


def build_dqn(config: DQNConfig) -> DQN:
    from polyfuse_dqn.dqn import DQN

    return DQN(config)


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("dqn", build_dqn, config=DQNConfig,
             description="Deep Q-learning: double DQN, n-step returns, replay of raw multimodal observations")
