"""Registration of the ``ppo`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_ppo.ppo`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl

if TYPE_CHECKING:
    from polyfuse_ppo.ppo import PPO


class PPOConfig(ComponentConfig):
    """Params of the ``ppo`` optimizer.

    Each ``iterate()`` collects ``n_steps`` steps from every vector env (a
    rollout of ``n_steps * num_envs`` transitions), then makes ``n_epochs``
    passes over it in shuffled minibatches of ``batch_size``. Step counts
    (``total_steps``) are environment steps summed over the vector envs, like
    ``trainer.total_steps``.
    """

    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate (the initial one when annealed).")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant",
        description="'constant', or 'linear': the learning rate falls linearly from learning_rate to 0 over "
        "total_steps environment steps (needs total_steps, or the trainer calling set_total_steps()).",
    )
    total_steps: int | None = Field(
        None,
        gt=0,
        description="The run's step budget (environment steps summed over the vector envs) over which "
        "lr_schedule='linear' anneals; set to trainer.total_steps. null: the budget the trainer tells the "
        "optimizer (set_total_steps()). Ignored by lr_schedule='constant'.",
    )
    n_steps: int = Field(
        64, gt=0, le=1_000_000, description="Steps collected from each vector env per rollout (per iterate())."
    )
    n_epochs: int = Field(4, gt=0, le=1000, description="Passes over each rollout.")
    batch_size: int = Field(
        64,
        gt=0,
        description="Samples per minibatch (gradient step); each pass shuffles the n_steps * num_envs rollout "
        "and splits it into minibatches of this size (a smaller last one when it does not divide the rollout).",
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(
        0.95, ge=0, le=1, description="GAE lambda: 0 is one-step TD advantages, 1 Monte-Carlo returns minus values."
    )
    clip_range: float = Field(
        0.2, gt=0, le=1, description="Policy ratio clipping: the objective ignores ratios outside [1-c, 1+c]."
    )
    clip_range_vf: float | None = Field(
        None,
        gt=0,
        description="Value clipping: new values further than this from the rollout's values are clipped "
        "(pessimistic max of clipped and unclipped losses). null: plain squared error.",
    )
    normalize_advantage: bool = Field(
        True, description="Standardise advantages to mean 0, std 1 within each minibatch."
    )
    ent_coef: float = Field(0.01, ge=0, description="Weight of the entropy bonus (subtracted from the loss).")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss.")
    max_grad_norm: float = Field(0.5, gt=0, description="Gradients are clipped to this global L2 norm.")
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Early stop: the update epochs end as soon as a minibatch's approximate KL to the rollout "
        "policy exceeds this (that minibatch's step is skipped). null: always run every epoch.",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="Weight of a KL(policy || reference) penalty in the loss, where the reference is a frozen "
        "copy of the policy taken at the first iterate() (after any warm start): RLHF-style fine-tuning that "
        "keeps the policy near its starting point. 0: no penalty and no reference copy.",
    )
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


def build_ppo(config: PPOConfig) -> PPO:
    from polyfuse_ppo.ppo import PPO

    return PPO(config)


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("ppo", build_ppo, config=PPOConfig,
             description="Proximal Policy Optimization: GAE, clipped objectives, optional KL penalty to a "
                         "reference policy")
