"""Registration of the ``preference-model`` reward and the ``synthetic`` feedback source. No torch import here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_feedback.model`) is imported inside the factories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from polyfuse import ComponentConfig, hookimpl
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from polyfuse.rewards import RunContext

    from polyfuse_feedback.model import PreferenceModel
    from polyfuse_feedback.synthetic import SyntheticAnnotator


class SyntheticConfig(ComponentConfig):
    """Params of the ``synthetic`` annotator: Boltzmann-rational in the segments' true (env) returns."""

    temperature: float = Field(
        0.0, ge=0, description="Boltzmann temperature: P(second preferred) = sigmoid((R2 - R1) / T); 0: perfectly "
        "rational (always prefers the higher return)."
    )
    error_rate: float = Field(
        0.0, ge=0, le=1, description="Probability that a strict preference is flipped after it is drawn (a "
        "careless annotator's mistakes); ties are not flipped."
    )
    tie_margin: float = Field(
        0.0, ge=0, description="Returns closer than this (or equal) are answered as a tie (0.5)."
    )
    seed: int | None = Field(None, description="Seed of the annotator's random stream; null: derived from the run.")


class FeedbackRef(BaseModel):
    """Which feedback source answers the queries, by registry name, with its params."""

    model_config = ConfigDict(extra="forbid")
    name: str = "synthetic"
    params: dict[str, Any] = Field(default_factory=dict)


class PreferenceModelConfig(ComponentConfig):
    """Params of the ``preference-model`` reward."""

    feedback: FeedbackRef = Field(default_factory=FeedbackRef, description="The feedback source that labels queries.")
    ensemble_size: int = Field(3, gt=0, le=16, description="Members of the ensemble (each on its own bootstrap).")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64], description="Hidden layers of each member's head.")
    head: Literal["per-action", "concat"] = Field(
        "per-action", description="per-action: the head outputs one reward per action and reads the taken one (as "
        "a Q-network); concat: the head reads (features, one-hot action) and outputs one reward."
    )
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(64, gt=0, description="Labelled pairs per gradient step.")
    gradient_steps: int = Field(50, ge=0, description="Gradient steps per member per update().")
    max_labels: int = Field(1000, ge=0, description="Label budget of the run (held-out labels included).")
    labels_per_update: int = Field(50, gt=0, description="Queries asked per update() until the budget is spent.")
    selection: Literal["random", "disagreement"] = Field(
        "random", description="random pairs from the pool, or the candidates the ensemble disagrees on most "
        "(disagreement: 0.52 against random's 0.65 held-out success on DigitsVQA at 40,000 steps, one seed)."
    )
    candidates_per_query: int = Field(
        8, gt=0, description="With selection: disagreement, random candidate pairs drawn per query asked."
    )
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="Share of labels kept out of training, to measure "
                                    "the model's pairwise accuracy.")
    pool_size: int = Field(4096, gt=1, description="Most recent segments kept to form queries from.")
    fragment_length: int = Field(0, ge=0, description="Segment length in steps; 0: whole episodes.")
    normalize: bool = Field(True, description="Scale scores to zero mean and unit variance over the pool.")
    uncertainty_penalty: float = Field(
        0.0, ge=0, description="Subtract this many ensemble standard deviations from each score (pessimism where the "
        "members disagree: actions the labels never showed). 0: the ensemble mean alone."
    )


def build_synthetic(config: SyntheticConfig, seed: int = 0) -> SyntheticAnnotator:
    from polyfuse_feedback.synthetic import SyntheticAnnotator

    return SyntheticAnnotator(config, seed if config.seed is None else config.seed)


def build_preference_model(config: PreferenceModelConfig, context: RunContext) -> PreferenceModel:
    from polyfuse_feedback.model import PreferenceModel

    return PreferenceModel(config, context)


@hookimpl
def register_rewards(register: Callable[..., Any]) -> None:
    register("preference-model", build_preference_model, config=PreferenceModelConfig,
             description="Reward model learned from pairwise preferences (Bradley-Terry ensemble, active queries)")


@hookimpl
def register_feedback(register: Callable[..., Any]) -> None:
    register("synthetic", build_synthetic, config=SyntheticConfig,
             description="Simulated annotator: Boltzmann-rational in the true return, with an error rate")
