"""Pseudo-labels on unlabelled pairs of the pool's segments: semi-supervised reward learning (SURF).

SURF (Park et al., ICLR 2022) trains a preference model on more pairs than people label: besides each
batch of labelled pairs it draws ``ratio`` times as many unlabelled pairs from the segments the run
already holds, and each member labels them itself. Where a member's ``P(second preferred) =
sigmoid(R2 - R1)`` reaches ``threshold`` (or ``1 - threshold``), that side becomes a hard label, and
the Bradley–Terry loss on those pairs, averaged over all pairs drawn (so the confident share scales it,
as in FixMatch and SURF), is added with ``weight``. Pseudo-labels are recomputed from the current
networks at every gradient step and never stored: the label store holds only real answers.

SURF's other half, temporal cropping of segments, is not here: a bandit's one-step outcomes have
nothing to crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from polyfuse.rewards import Segment

if TYPE_CHECKING:
    from polyfuse_feedback.plugin import PseudoLabelsConfig


def confident_labels(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's hard label (1.0: second preferred) of each pair, and whether it is confident enough to use.

    ``logits`` are ``R2 - R1`` per member and pair, shape ``(K, N)``; both results have that shape and
    carry no gradient (a pseudo-label is a target, not something to move).
    """
    logits = logits.detach()
    targets = (logits > 0).to(logits.dtype)
    confident = torch.sigmoid(logits.abs()) >= threshold
    return targets, confident


def pseudo_label_loss(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bradley–Terry loss of each member on its confident pairs, averaged over all ``N`` pairs, summed over members.

    Returns the loss and :func:`confident_labels`' targets and mask.
    """
    targets, confident = confident_labels(logits, threshold)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (losses * confident).mean(1).sum(), targets, confident


class PseudoLabeller:
    """Draws unlabelled pairs from the pool at each gradient step and gives the members' loss on them.

    It has its own random stream: with ``selection: random`` turning it on does not change which queries
    are asked (with active selection, the model it trains chooses them).
    Counts what it used since the last :meth:`metrics` call.
    """

    def __init__(self, config: PseudoLabelsConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, 0x5EF])
        self._steps = 0
        self._used = 0.0  # confident pairs, summed over members and steps
        self._agreeing = 0.0
        self._tied = 0.0  # confident pairs whose env returns are equal (the annotator would say: a tie)
        self._env_reward = False  # whether the drawn segments' env returns ever differed

    def loss(self, pool: Sequence[Segment], labelled: int,
             returns: Callable[[Sequence[Segment]], torch.Tensor]) -> torch.Tensor:
        """``weight`` x the members' loss on ``ratio * labelled`` pairs of ``pool`` segments.

        ``returns`` gives each member's predicted returns of segments, ``(K, len(segments))``, with gradient.
        """
        size = len(pool)
        if size < 2 or labelled <= 0:
            return torch.zeros(())
        count = self.config.ratio * labelled
        first = self.rng.integers(0, size, count)
        second = (first + self.rng.integers(1, size, count)) % size  # never a segment against itself
        rows, index = np.unique(np.concatenate([first, second]), return_inverse=True)
        segments = [pool[i] for i in rows.tolist()]
        predicted = returns(segments)
        index = torch.as_tensor(index)
        logits = predicted[:, index[count:]] - predicted[:, index[:count]]
        loss, targets, confident = pseudo_label_loss(logits, self.config.threshold)
        self._count(segments, index.numpy(), count, targets, confident)
        return self.config.weight * loss

    def _count(self, segments: Sequence[Segment], index: np.ndarray, count: int, targets: torch.Tensor,
               confident: torch.Tensor) -> None:
        true = np.array([float(np.sum(s.env_rewards)) for s in segments])
        difference = torch.as_tensor(true[index[count:]] - true[index[:count]])
        # a pseudo-label agrees when the environment's return prefers the same side strictly (a tie is a miss)
        agrees = ((difference > 0) & (targets > 0.5)) | ((difference < 0) & (targets < 0.5))
        self._steps += 1
        self._used += float(confident.sum()) / confident.shape[0]
        self._agreeing += float((agrees & confident).sum()) / confident.shape[0]
        self._tied += float(((difference == 0) & confident).sum()) / confident.shape[0]
        self._env_reward = self._env_reward or bool(true.std() > 0)

    def metrics(self) -> dict[str, float]:
        """Pseudo-labelled pairs per member and gradient step since the last call, and (where the env has a
        reward) the shares of them that its return agrees with and that it ties; then starts counting again."""
        if not self._steps:
            return {}
        metrics = {"pseudo_labels": self._used / self._steps}
        if self._env_reward and self._used:
            metrics.update(pseudo_label_agreement=self._agreeing / self._used,
                           pseudo_label_ties=self._tied / self._used)
        self._steps, self._used, self._agreeing, self._tied, self._env_reward = 0, 0.0, 0.0, 0.0, False
        return metrics
