"""Reward networks and the losses that fit them to feedback: Bradley–Terry for comparisons, ordinal for ratings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from polyfuse.errors import PolyfuseError


def bradley_terry_loss(first_returns: torch.Tensor, second_returns: torch.Tensor, preferences: torch.Tensor,
                       weights: torch.Tensor | None = None, margin: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``P(second preferred) = sigmoid(R2 - R1)`` against ``preferences`` in {0, 0.5, 1}.

    With a ``margin``, a strict preference asks the preferred return to exceed the other by that much
    (the logit is shifted against the preferred side); ties are unaffected.
    """
    logits = second_returns - first_returns - margin * (2.0 * preferences - 1.0)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, preferences, reduction="none")
    return _weighted_mean(losses, weights)


def ordinal_loss(returns: torch.Tensor, ratings: torch.Tensor, thresholds: torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of ratings ``1..K`` under a cumulative-logit model of the predicted return.

    ``P(rating > k) = sigmoid(R - thresholds[k-1])`` for ``k = 1..K-1`` (ordered thresholds), so a
    rating and a comparison read the same scale: the return. Good/bad labels are ``K = 2``.
    """
    above = torch.sigmoid(returns[:, None] - thresholds[None, :])  # (N, K-1): P(rating > k)
    ones, zeros = torch.ones_like(returns[:, None]), torch.zeros_like(returns[:, None])
    cumulative = torch.cat([ones, above, zeros], dim=1)  # P(rating > k) for k = 0..K
    index = ratings.long().reshape(-1, 1)
    likelihood = cumulative.gather(1, index - 1) - cumulative.gather(1, index)
    return _weighted_mean(-torch.log(likelihood.squeeze(1).clamp_min(1e-6)), weights)


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


class Thresholds(torch.nn.Module):
    """Ordered cut points of a rating scale on the return axis: a first one, then positive gaps."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.first = torch.nn.Parameter(torch.zeros(()))
        self.gaps = torch.nn.Parameter(torch.zeros(max(levels - 2, 0)))

    def forward(self) -> torch.Tensor:
        return torch.cat([self.first[None], self.first + torch.cumsum(torch.nn.functional.softplus(self.gaps), 0)])


class Member(torch.nn.Module):
    """One reward network: encoders + fuser, then an MLP head giving ``r(s, a)``.

    ``head: per-action`` (the default) outputs one reward per action and reads the taken one, as a
    Q-network does; ``head: concat`` reads (features, one-hot action) and outputs one reward; ``head:
    named`` scores each action as ``h(s) · P e(a) + b_a``, with ``e(a)`` the action's name embedded by
    the encoder of the modality that reads the text observation ``action_text`` (as DRRN scores text
    actions), so answers share what their names share instead of each learning its weights alone.
    Rating scales in use get their own :class:`Thresholds` (keyed by the number of levels).
    """

    def __init__(self, network: torch.nn.Module, num_actions: int, hidden_sizes: Sequence[int],
                 head: str = "per-action", rating_scales: Sequence[int] = (),
                 action_names: Sequence[str] | None = None, action_text: str | None = None) -> None:
        super().__init__()
        self.network = network
        self.num_actions = num_actions
        self.named = head == "named"
        self.per_action = head in ("per-action", "named")
        layers: list[torch.nn.Module] = []
        width = int(network.output_dim) + (0 if self.per_action else num_actions)
        for size in hidden_sizes:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        if self.named:
            if action_names is None or action_text is None:
                raise ValueError("head: named needs the action names and the text modality that embeds them")
            readers = [modality for modality, key in network.observation_keys.items() if key == action_text]
            if not readers:
                raise PolyfuseError(f"reward.params.action_text: no modality of the reward network reads "
                                    f"{action_text!r}; it reads {sorted(network.observation_keys.values())}")
            self.action_names, self.name_modality = tuple(action_names), readers[0]
            self.name_projection = torch.nn.Linear(int(network.encoders[readers[0]].output_dim), width, bias=False)
            self.action_bias = torch.nn.Parameter(torch.zeros(num_actions))
        else:
            layers.append(torch.nn.Linear(width, num_actions if self.per_action else 1))
        self._frozen_names: torch.Tensor | None = None
        self.head = torch.nn.Sequential(*layers)
        self.thresholds = torch.nn.ModuleDict({str(levels): Thresholds(levels) for levels in rating_scales})

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._frozen_names = None  # a loaded frozen encoder may embed the names differently
        super()._load_from_state_dict(*args, **kwargs)

    def _name_embeddings(self) -> torch.Tensor:
        """The actions' names through the text encoder, ``(actions, dim)``; computed once if that encoder is frozen."""
        if self._frozen_names is not None:
            return self._frozen_names
        encoder = self.network.encoders[self.name_modality]
        if encoder.trainable:
            return encoder(self.action_names).float()
        with torch.no_grad():
            self._frozen_names = encoder(self.action_names).float()
        return self._frozen_names

    def _per_action(self, features: torch.Tensor) -> torch.Tensor:
        if not self.named:
            return self.head(features)
        return self.head(features) @ self.name_projection(self._name_embeddings()).T + self.action_bias

    def action_rewards(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The reward of every action in each observation, shape ``(N, actions)``."""
        features = self.network(observations)
        if self.per_action:
            return self._per_action(features)
        eye = torch.eye(self.num_actions, dtype=features.dtype)
        return torch.stack([self.head(torch.cat([features, eye[a].expand(len(features), -1)], dim=1)).squeeze(1)
                            for a in range(self.num_actions)], dim=1)

    def forward(self, observations: Mapping[str, Any], actions: torch.Tensor) -> torch.Tensor:
        features = self.network(observations)
        actions = actions.long()
        if self.per_action:
            return self._per_action(features).gather(1, actions.reshape(-1, 1)).squeeze(1)
        one_hot = torch.nn.functional.one_hot(actions, self.num_actions).to(features.dtype)
        return self.head(torch.cat([features, one_hot], dim=1)).squeeze(1)
