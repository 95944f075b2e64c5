"""Registration of the ``a2c`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module; the optimizer
itself (:mod:`polyfuse_a2c.a2c`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from polyfuse import hookimpl
from polyfuse.declarations import learns_from
from polyfuse.rl.configs import OnPolicyConfig
from pydantic import Field, model_validator

if TYPE_CHECKING:
    from polyfuse_a2c.a2c import A2C

DESCRIPTION = "Synchronous advantage actor-critic (one gradient step per rollout); REINFORCE with returns: monte-carlo"


class A2CConfig(OnPolicyConfig):
    """Params of the ``a2c`` optimizer; the defaults are Stable-Baselines3's A2C.

    Each ``iterate()`` collects ``n_steps`` steps from every vector env and makes
    one gradient step on the whole rollout. ``returns: monte-carlo`` with
    ``baseline: false`` is REINFORCE; with ``baseline: true``, REINFORCE with a
    learned baseline.
    """

    learning_rate: float = Field(
        7e-4, gt=0, le=1, description="Learning rate of RMSprop or Adam (the initial one when annealed)."
    )
    n_steps: int = Field(
        5,
        gt=0,
        le=1_000_000,
        description="Steps collected from each vector env per rollout (one gradient step on the n_steps * "
        "num_envs transitions). With returns 'monte-carlo' only the steps whose episode ends within the "
        "same rollout are learnt from: make it several times the episode length.",
    )
    gae_lambda: float = Field(
        1.0,
        ge=0,
        le=1,
        description="GAE lambda (returns 'gae' only): 1 is A2C's n-step returns, bootstrapped from the critic "
        "at the rollout's end; 0 one-step TD advantages.",
    )
    normalize_advantage: bool = Field(
        False, description="Standardise advantages to mean 0, std 1 over the samples of the gradient step."
    )
    ent_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus (subtracted from the loss).")
    vf_coef: float = Field(
        0.5, ge=0, description="Weight of the value loss 0.5 * mean((V - return)^2); unused without a baseline."
    )
    returns: Literal["gae", "monte-carlo"] = Field(
        "gae",
        description="'gae': GAE advantages bootstrapped from the critic (A2C). 'monte-carlo': discounted "
        "rewards summed to the episode's end (termination or truncation), never bootstrapped; the steps of "
        "episodes still running when the rollout ends are left out of the gradient step.",
    )
    baseline: bool = Field(
        True,
        description="Subtract the critic's value from the return and train the critic. false (REINFORCE "
        "without baseline, needs returns 'monte-carlo'): the critic is neither trained nor used.",
    )
    optimizer: Literal["rmsprop", "adam"] = Field(
        "rmsprop", description="'rmsprop' (torch.optim.RMSprop, as SB3's A2C) or 'adam'."
    )
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1, description="RMSprop's smoothing constant (optimizer 'rmsprop').")
    rmsprop_eps: float = Field(1e-5, gt=0, le=1, description="RMSprop's epsilon (optimizer 'rmsprop').")
    adam_eps: float = Field(1e-5, gt=0, le=1, description="Adam's epsilon (optimizer 'adam').")

    @model_validator(mode="after")
    def _needs_a_critic(self) -> A2CConfig:
        if not self.baseline and self.returns == "gae":
            raise ValueError(
                "returns 'gae' bootstraps from the critic, which baseline false turns off; REINFORCE without a "
                "baseline is returns: monte-carlo, baseline: false"
            )
        if not self.baseline and not self.shared_trunk:
            raise ValueError("shared_trunk false builds a critic trunk, which baseline false never uses")
        return self


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("a2c", build_a2c, config=A2CConfig, description=DESCRIPTION)


@learns_from("env")
def build_a2c(config: A2CConfig) -> A2C:
    """The optimizer; its module (and torch) is imported only when a run builds one."""
    from polyfuse_a2c.a2c import A2C

    return A2C(config)
