"""Registration of the ``dpo`` optimizer: its config and a factory. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_dpo.dpo`) is imported inside the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import learns_from
from pydantic import Field, model_validator

if TYPE_CHECKING:
    from polyfuse_dpo.dpo import DPO

LossType = Literal["dpo", "ipo", "conservative"]


class DPOConfig(ComponentConfig):
    """Params of the ``dpo`` optimizer.

    Each ``iterate()`` makes ``gradient_steps`` minibatch steps of
    ``batch_size`` preference pairs, drawn without replacement from shuffled
    passes (epochs) over the dataset.
    """

    beta: float = Field(
        0.5,
        gt=0,
        description="Strength of the tie to the reference policy: the implicit reward is beta times the log-ratio "
        "log pi(a|s) - log pi_ref(a|s). Smaller lets the policy move further from the reference. One action's "
        "log-ratio is a few nats at most, not a sum over tokens as in language models (where 0.1 is usual), so "
        "0.5 to 1 suit discrete-action policies.",
    )
    loss: LossType = Field(
        "dpo",
        description="'dpo': -log sigmoid(h) (Rafailov et al. 2023); 'conservative' (cDPO): labels flipped with "
        "probability label_smoothing, -(1-e) log sigmoid(h) - e log sigmoid(-h); 'ipo' (Azar et al. 2023): "
        "(h/beta - 1/(2 beta))^2, which stops pushing once the log-ratio margin reaches 1/(2 beta). h is beta "
        "times the chosen action's log-ratio to the reference minus the rejected action's.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="With loss 'conservative': the assumed probability e that a pair's preference is wrong "
        "(noisy labels), in (0, 0.5). Must be 0 with the other losses.",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    batch_size: int = Field(64, gt=0, description="Preference pairs per gradient step (a smaller last one per epoch).")
    gradient_steps: int = Field(
        1, gt=0, le=10_000, description="Gradient steps per iterate() (the trainer logs and checks the budget "
        "between iterates)."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global L2 norm.")
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64],
        max_length=8,
        description="Widths of the hidden layers of the policy head (an MLP on the fused features); [] gives a "
        "linear head. Must match init_from's run when that is set.",
    )
    activation: Literal["tanh", "relu"] = Field("relu", description="Activation of the head's hidden layers.")
    init_from: Path | None = Field(
        None,
        description="A run folder (its promoted checkpoint when it has one, else its newest; or a checkpoint "
        "folder) of an earlier ppo, a2c or dpo run with the same "
        "modalities, encoders, fuser and head: the policy starts from that run's policy weights (frozen encoders "
        "stay this run's own), and so does the reference, unless trainer.warm_start trains it further first. "
        "null: a freshly initialised policy.",
    )

    @model_validator(mode="after")
    def _smoothing_fits_the_loss(self) -> DPOConfig:
        if self.loss == "conservative" and self.label_smoothing == 0:
            raise ValueError("loss 'conservative' needs label_smoothing > 0 (e.g. 0.1); with 0 it is plain 'dpo'")
        if self.loss != "conservative" and self.label_smoothing != 0:
            raise ValueError(f"label_smoothing applies to loss 'conservative' only; with loss {self.loss!r} "
                             "set it to 0 (or use loss: conservative)")
        return self


@learns_from("dataset")
def build_dpo(config: DPOConfig) -> DPO:
    from polyfuse_dpo.dpo import DPO

    return DPO(config)


@hookimpl
def register_optimizers(register: Callable[..., Any]) -> None:
    register("dpo", build_dpo, config=DPOConfig,
             description="Direct Preference Optimization over discrete actions, offline from preference pairs "
                         "(DPO, IPO, conservative DPO) against a frozen reference policy")
