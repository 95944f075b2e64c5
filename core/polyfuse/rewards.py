"""Reward sources: where the reward an RL optimizer maximises comes from.

A reward source is scored where rewards are consumed, never at collection
time unless it says its rewards never change: an on-policy optimizer scores
a whole rollout at once, an off-policy one scores the transitions it samples
from replay, so a reward model that learns during the run is never read
stale. Optimizers therefore never know whether rewards come from the
environment, a learned reward model, people or AI judges.

A reward source may also learn: it asks for trajectory segments
(``segment_length``), the trainer hands it every finished segment
(:meth:`RewardSource.observe`) and calls :meth:`RewardSource.update` on a
schedule (``trainer.reward_update_every``), logging what it returns as
``reward/<name>`` metrics and checkpointing its :meth:`RewardSource.state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from polyfuse.network import MultimodalNetwork


@dataclass(frozen=True)
class RewardBatch:
    """Transitions to score: ``observations`` are those the ``actions`` were taken in.

    ``terminated``/``truncated`` say whether the transition ended its
    episode. Observations are a batch (arrays; text as tuples of ``str``).
    """

    observations: Mapping[str, Any]
    actions: np.ndarray
    env_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class Segment:
    """A stretch of one environment's trajectory: a whole episode, or a fixed-length fragment of one.

    ``observations`` is a batch of the segment's ``len(actions)`` steps, in
    order; ``infos[t]`` holds step ``t``'s info entries for this environment.
    ``terminated``/``truncated`` say how the episode ended when the segment
    reaches its end (both false for a fragment cut from a running episode).
    """

    observations: Mapping[str, Any]
    actions: np.ndarray
    env_rewards: np.ndarray
    infos: Sequence[Mapping[str, Any]]
    terminated: bool
    truncated: bool
    env_index: int

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class RunContext:
    """What a reward source's factory gets: the run it belongs to.

    ``make_network()`` builds the pipeline's encoders and fuser through the
    registry, as the optimizer's networks are built: frozen encoders are
    shared with theirs (one sentence-transformer in memory) and read the same
    feature cache. ``seed`` is this component's own seed (derived from
    ``trainer.seed``); ``run_dir`` is the run's ``output_dir``;
    ``planned_updates`` is how many times the trainer will call ``update()``
    over the whole run (``None`` when unknown), so a reward can spread a
    budget (of labels, say) over the run; ``registry`` is the run's registry,
    to build the components a reward names in its params (feedback sources);
    ``env_id`` and ``action_names`` (what each discrete action means, where the
    environment says) let a reward show the behaviour to people; ``asks``: see below.
    """

    observation_space: Any
    action_space: Any
    make_network: Callable[[], MultimodalNetwork]
    seed: int
    run_dir: Path
    device: torch.device | str = "cpu"
    planned_updates: int | None = None
    registry: Any = None
    env_id: str | None = None
    action_names: tuple[str, ...] | None = None
    asks: bool = True
    """False when the reward is built only to score (``polyfuse serve``): it must ask nobody for feedback
    (no feedback sources, label store or annotation server); its state comes from a checkpoint."""


class RewardSource:
    """Scores transitions; may learn from trajectory segments during the run.

    Class attributes a subclass sets:

    - ``stationary``: the reward of a transition never changes during a run
      (true of the environment's own reward), so an optimizer may score it once
      at collection and store it, and combine stored rewards (n-step returns).
      A reward source that learns must leave it ``False``.
    - ``segment_length``: ``None`` (the default) asks for no segments; ``0``
      asks for whole episodes; ``k > 0`` for fragments of ``k`` steps (an
      episode's tail shorter than ``k`` is dropped).
    """

    stationary: bool = False
    segment_length: int | None = None

    def score(self, batch: RewardBatch) -> np.ndarray:
        """One float32 reward per transition of ``batch``, shape ``(len(batch),)``."""
        raise NotImplementedError

    def estimate(self, observations: Mapping[str, Any], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """What a served policy reports with its answers: each (observation, action)'s reward, and for an
        ensemble its members' disagreement (standard deviation), from observations and actions alone.

        None (the default): this reward cannot say without the environment (a served answer has no
        environment reward or episode end).
        """
        return None

    def observe(self, segments: Sequence[Segment]) -> None:
        """Segments finished since the last call (only called when ``segment_length`` is not ``None``)."""

    def update(self) -> dict[str, float]:
        """One learning step on what was observed; returns scalar metrics (logged as ``reward/<key>``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (a learned reward model's weights, its data, feedback counters)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def close(self) -> None:
        """Release threads, connections or files; called once when the run ends, however it ends."""


class EnvReward(RewardSource):
    """The environment's own reward, optionally scaled (useful when returns are large)."""

    stationary = True

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def score(self, batch: RewardBatch) -> np.ndarray:
        rewards = np.asarray(batch.env_rewards, dtype=np.float32)
        return rewards if self.scale == 1.0 else rewards * np.float32(self.scale)
