"""The params the RL base classes read, shared by the configs of the optimizers built on them.

No torch here: a plugin's ``plugin.py`` imports its config when it
registers, and ``polyfuse --help`` imports every plugin.py. A subclass may
redeclare a field to change its default or its description.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from polyfuse.components import ComponentConfig


class OnPolicyConfig(ComponentConfig):
    """Params of :class:`polyfuse.rl.on_policy.OnPolicyAlgorithm`.

    Each ``iterate()`` collects ``n_steps`` steps from every vector env (a
    rollout of ``n_steps * num_envs`` transitions) and updates on it.
    """

    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate (the initial one when annealed).")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="'constant', or 'linear': the learning rate falls linearly from learning_rate to 0 over the "
        "run's budget (trainer.total_steps, in trainer.budget_unit).",
    )
    n_steps: int = Field(
        64, gt=0, le=1_000_000, description="Steps collected from each vector env per rollout (per iterate())."
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(
        0.95, ge=0, le=1, description="GAE lambda: 0 is one-step TD advantages, 1 Monte-Carlo returns minus values."
    )
    normalize_advantage: bool = Field(
        True, description="Standardise advantages to mean 0, std 1 within each minibatch."
    )
    ent_coef: float = Field(0.01, ge=0, description="Weight of the entropy bonus (subtracted from the loss).")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss.")
    max_grad_norm: float = Field(0.5, gt=0, description="Gradients are clipped to this global L2 norm.")
    shared_trunk: bool = Field(
        True,
        description="One encoders+fuser trunk for the policy and value heads; false builds a second trunk "
        "for the value head (twice the trunk parameters, no interference between the two losses).",
    )
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64],
        max_length=8,
        description="Widths of the hidden layers of the policy head and of the value head (each its own MLP "
        "on the fused features); [] gives linear heads.",
    )
    activation: Literal["tanh", "relu"] = Field("tanh", description="Activation of the heads' hidden layers.")
    ortho_init: bool = Field(
        True,
        description="Orthogonal initialisation of the heads (gain sqrt(2) hidden, 0.01 policy output, 1 value "
        "output), as in the PPO implementations of Baselines and CleanRL. The trunk keeps its own init.",
    )
    adam_eps: float = Field(1e-5, gt=0, le=1, description="Adam's epsilon.")
    memory: int = Field(
        0,
        ge=0,
        le=4096,
        description="Size of a GRU memory between the fused features and the heads, for partially observed worlds "
        "where the right move depends on what was seen earlier in the episode (BabyAI's 7x7 view). 0: a memoryless "
        "policy. Needs shared_trunk: true and env.vectorization sync or async.",
    )
    sequence_length: int = Field(
        16,
        gt=0,
        le=1024,
        description="memory > 0: each rollout is cut into sequences of this many steps of one env, learnt from by "
        "backpropagation through time from the memory the sequence started with; n_steps must be a multiple of it.",
    )

    @model_validator(mode="after")
    def _memory_fits(self) -> OnPolicyConfig:
        if self.memory and not self.shared_trunk:
            raise ValueError("memory needs shared_trunk: true (both heads read one memory); set shared_trunk: true "
                             "or memory: 0")
        if self.memory and self.n_steps % self.sequence_length:
            raise ValueError(
                f"memory: n_steps ({self.n_steps}) must be a multiple of sequence_length ({self.sequence_length}) so "
                "each rollout cuts into whole sequences; change either"
            )
        return self


class OffPolicyConfig(ComponentConfig):
    """Params of :class:`polyfuse.rl.off_policy.OffPolicyAlgorithm`.

    Step counts (``learning_starts``) are environment steps summed over the
    vector envs.
    """

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
        "cuts the sum: termination stops bootstrapping, truncation bootstraps from the final observation. "
        "Needs a stationary reward source (the environment's): a learned one is scored when sampled, one "
        "transition at a time.",
    )
    train_frequency: int = Field(
        1,
        gt=0,
        description="Vector-env steps per iterate(); each iterate collects train_frequency * num_envs "
        "transitions, then makes gradient_steps updates.",
    )
    gradient_steps: int = Field(1, gt=0, description="Gradient steps per iterate() once learning has started.")
    max_grad_norm: float = Field(10.0, gt=0, description="Gradients are clipped to this global L2 norm.")
