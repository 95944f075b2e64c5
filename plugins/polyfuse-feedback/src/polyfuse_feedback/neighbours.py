"""Neighbour consistency over labelled and unlabelled steps: graph-based semi-supervised reward learning.

Labels reach few observations; the pool holds many more that nobody labelled. Where observations that
are close in one modality's raw values usually mean the same (handwritten scans of one digit, grid
views of one room), the reward of every action should barely change when that modality is swapped for
a near neighbour's. At each gradient step ``ratio`` x the labelled batch of the graph's steps is drawn;
each gets one of its ``neighbours`` nearest other values of ``modality`` (Euclidean over the raw
values, among the distinct values the graph holds), the other modalities kept; and each member's squared gap
between the two per-action reward vectors, times ``weight``, joins its loss. This is Laplacian
(manifold) regularisation over a k-nearest-neighbour graph (Zhu & Ghahramani's label propagation,
Belkin et al.'s manifold regularisation) applied to a reward network: what the labels teach about one
scan spreads to the scans that look like it, and through them to the rest of its cluster.

The graph holds every labelled step, where what the labels teach starts from, and the pool's steps,
where it spreads to; it is rebuilt at each reward update (the pool moves with the policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.observations import concatenate, is_text, select, stack, take
from polyfuse.rewards import Segment

if TYPE_CHECKING:
    from polyfuse_feedback.plugin import NeighbourConsistencyConfig

MAX_GRAPH_STEPS = 8192  # steps the graph is built over (labelled ones first; a pool of long episodes holds many more)
DISTANCE_CHUNK = 1024  # rows of the distance matrix computed at once


def nearest_neighbours(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of each row's ``count`` nearest other rows (Euclidean), shape ``(len(values), count)`` at most.

    Rows are expected distinct; with ``count`` or fewer rows, each gets all the others.
    """
    rows = len(values)
    values = values.astype(np.float32, copy=False)
    squared = (values * values).sum(1)
    wanted = min(count, rows - 1)
    result = np.empty((rows, wanted), dtype=np.int64)
    for start in range(0, rows, DISTANCE_CHUNK):
        block = values[start:start + DISTANCE_CHUNK]
        distances = squared[start:start + len(block), None] + squared[None, :] - 2.0 * block @ values.T
        distances[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # never itself
        nearest = np.argpartition(distances, wanted - 1, axis=1)[:, :wanted]
        order = np.take_along_axis(distances, nearest, 1).argsort(1, kind="stable")
        result[start:start + len(block)] = np.take_along_axis(nearest, order, 1)
    return result


class NeighbourGraph:
    """Pool steps, the distinct values of one modality among them, and each value's nearest others."""

    def __init__(self, observations: Mapping[str, Any], modality: str, neighbours: int) -> None:
        values = np.asarray(observations[modality])
        flat = values.reshape(len(values), -1)
        distinct, first_step, value_of_step = np.unique(flat, axis=0, return_index=True, return_inverse=True)
        self.observations = observations
        self.modality = modality
        self.value_of_step = value_of_step.reshape(-1)
        self.example_step = first_step  # a step holding each distinct value
        self.neighbours = nearest_neighbours(distinct, neighbours) if len(distinct) > 1 else None

    @property
    def steps(self) -> int:
        return len(self.value_of_step)

    def pairs(self, rng: np.random.Generator, count: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``count`` drawn steps and the same steps with ``modality`` swapped for a random near neighbour's."""
        if self.neighbours is None:
            return None
        steps = rng.integers(0, self.steps, count)
        choice = rng.integers(0, self.neighbours.shape[1], count)
        neighbour_steps = self.example_step[self.neighbours[self.value_of_step[steps], choice]]
        drawn = take(self.observations, steps)
        swapped = dict(drawn)
        swapped[self.modality] = np.asarray(self.observations[self.modality])[neighbour_steps]
        return drawn, swapped


class NeighbourConsistency:
    """The consistency term of the members' loss, over a graph rebuilt from the pool at each update.

    It has its own random stream: with ``selection: random`` turning it on does not change which queries
    are asked (with active selection, the model it trains chooses them).
    """

    def __init__(self, config: NeighbourConsistencyConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, 0x4E4])
        self.graph: NeighbourGraph | None = None
        self._losses: list[float] = []

    def check(self, observation_keys: Sequence[str], text_keys: Sequence[str]) -> None:
        """Fail at start-up, not at the first labels, when the modality cannot give neighbours."""
        modality = self.config.modality
        if modality not in observation_keys:
            raise PolyfuseError(f"reward.params.neighbour_consistency.modality: the observations have no "
                                f"{modality!r}; choose one of {sorted(observation_keys)}")
        if modality in text_keys:
            raise PolyfuseError(f"reward.params.neighbour_consistency.modality: {modality!r} is text, and neighbours "
                                "are found by the distance between raw numeric values (an image, a grid, a vector)")

    def rebuild(self, labelled: Sequence[Segment], pool: Sequence[Segment]) -> None:
        """The graph over every labelled step and (up to :data:`MAX_GRAPH_STEPS` in all) the pool's, drawn before
        they are copied.

        Label propagation spreads from labelled points through unlabelled ones, so the labelled steps are
        always in the graph: the pool holds the latest behaviour only, and once the last labels are asked it
        soon holds none of them.
        """
        labelled_steps = self._steps(labelled, MAX_GRAPH_STEPS)
        taken = 0 if labelled_steps is None else len(next(iter(labelled_steps.values())))
        pool_steps = self._steps(pool, MAX_GRAPH_STEPS - taken)
        parts = [steps for steps in (labelled_steps, pool_steps) if steps is not None]
        if not parts:
            self.graph = None
            return
        observations = concatenate(parts)
        self.check(list(observations), [key for key, value in observations.items() if is_text(value)])
        self.graph = NeighbourGraph(observations, self.config.modality, self.config.neighbours)

    def _steps(self, segments: Sequence[Segment], budget: int) -> dict[str, Any] | None:
        """Up to ``budget`` of the segments' steps as one batch, drawn at random when there are more; None: none."""
        segments = [segment for segment in segments if len(segment)]
        lengths = np.array([len(segment) for segment in segments], dtype=np.int64)
        total = int(lengths.sum())
        if budget <= 0 or total == 0:
            return None
        if total <= budget:
            return concatenate([segment.observations for segment in segments])
        steps = np.sort(self.rng.choice(total, budget, replace=False))
        ends = np.cumsum(lengths)
        owner = np.searchsorted(ends, steps, side="right")
        offset = steps - (ends - lengths)[owner]
        return stack([select(segments[s].observations, int(t)) for s, t in zip(owner, offset)])

    def loss(self, labelled: int, action_rewards: Callable[[Mapping[str, Any]], torch.Tensor]) -> torch.Tensor:
        """``weight`` x the members' summed mean squared gap between the per-action rewards of drawn steps and
        their swapped copies; ``action_rewards`` gives ``(K, N, actions)`` with gradient."""
        pairs = self.graph.pairs(self.rng, self.config.ratio * labelled) if self.graph is not None else None
        if pairs is None or labelled <= 0:
            return torch.zeros(())
        drawn, swapped = pairs
        rewards = action_rewards(concatenate([drawn, swapped]))  # one forward pass over both halves
        half = rewards.shape[1] // 2
        gap = rewards[:, :half] - rewards[:, half:]
        loss = gap.pow(2).mean(dim=(1, 2)).sum()
        self._losses.append(float(loss.detach()) / gap.shape[0])
        return self.config.weight * loss

    def metrics(self) -> dict[str, float]:
        """The mean squared reward gap per member over the gradient steps since the last call (then starts again)."""
        if not self._losses:
            return {}
        metrics = {"neighbour_gap": float(np.mean(self._losses))}
        self._losses = []
        return metrics
