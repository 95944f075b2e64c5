"""Registration of the ``ppo`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_ppo.ppo`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from polyfuse import hookimpl
from polyfuse.declarations import learns_from
from polyfuse.rl.configs import OnPolicyConfig
from pydantic import Field

if TYPE_CHECKING:
    from polyfuse_ppo.ppo import PPO


class PPOConfig(OnPolicyConfig):
    """Params of the ``ppo`` optimizer (rollout, GAE, network and Adam params from :class:`OnPolicyConfig`).

    Each ``iterate()`` collects ``n_steps`` steps from every vector env (a
    rollout of ``n_steps * num_envs`` transitions), then makes ``n_epochs``
    passes over it in shuffled minibatches of ``batch_size``.
    """

    n_epochs: int = Field(
        8, gt=0, le=1000, description="Passes over each rollout (8 learns DigitsVQA where 4 stalls: benchmarks/ppo_defaults)."
    )
    batch_size: int = Field(
        64,
        gt=0,
        description="Samples per minibatch (gradient step); each pass shuffles the n_steps * num_envs rollout "
        "and splits it into minibatches of this size (a smaller last one when it does not divide the rollout).",
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
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Early stop: the update epochs end as soon as a minibatch's approximate KL to the rollout "
        "policy exceeds this (that minibatch's step is skipped). null: always run every epoch.",
    )
    activation: Literal["tanh", "relu"] = Field(
        "relu",
        description="Activation of the heads' hidden layers (relu: tanh heads saturate on fused features and stall "
        "DigitsVQA at 'always no'; benchmarks/ppo_defaults).",
    )
    lag_correction: Literal["decoupled", "ratio"] = Field(
        "decoupled",
        description="How a rollout collected by a policy one update old (env.vectorization: pipelined or ray) is "
        "corrected. decoupled: decoupled PPO (Hilton et al. 2021), the ratio is clipped around the learner's policy "
        "at the start of the update (one extra forward pass over the rollout) and the advantages are weighted by "
        "pi_learner / pi_behaviour (at most behaviour_weight_cap); ratio: the plain PPO ratio against the behaviour "
        "policy, clipped around it. On-policy rollouts (sync, async) are unaffected by either.",
    )
    behaviour_weight_cap: float | None = Field(
        None,
        ge=1,
        description="lag_correction decoupled: the cap of the importance weight pi_learner / pi_behaviour. "
        "null: no cap, as in the paper (on BabyAI, one update late, they averaged 1.00 per rollout, at most 3.2; "
        "a cap of 1.2 gave lower held-out success: benchmarks/pipelined_sampling).",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="Weight of a KL(policy || reference) penalty in the loss, where the reference is a frozen "
        "copy of the policy taken at the first iterate() (after any warm start): RLHF-style fine-tuning that "
        "keeps the policy near its starting point. 0: no penalty and no reference copy. With memory, the reference "
        "keeps a memory of its own along each episode.",
    )


@learns_from("env")
def build_ppo(config: PPOConfig) -> PPO:
    from polyfuse_ppo.ppo import PPO

    return PPO(config)


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("ppo", build_ppo, config=PPOConfig,
             description="Proximal Policy Optimization: GAE, clipped objectives, optional KL penalty to a "
                         "reference policy")
