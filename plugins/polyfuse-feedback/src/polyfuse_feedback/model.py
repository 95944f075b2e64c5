"""The ``preference-model`` reward: an ensemble of reward networks fitted to pairwise preferences (Bradley–Terry).

Each member is the pipeline's encoders + fuser (``context.make_network()``;
frozen encoders are shared with the policy's networks) and an MLP head
giving ``r(s, a)`` (one output per action, the taken one read; or on
(features, one-hot action) with ``head: concat``). A segment's predicted return
is the sum of its steps' rewards; ``P(second preferred) = sigmoid(R2 - R1)``
is fitted to the labels (ties as 0.5 targets), each member on its own
bootstrap weights of the labels. ``score()`` is the ensemble mean, normalised.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from polyfuse.feedback import FeedbackSource, Query
from polyfuse.observations import as_text_array, concatenate, is_text
from polyfuse.rewards import RewardBatch, RewardSource, RunContext, Segment

if TYPE_CHECKING:
    from polyfuse_feedback.plugin import PreferenceModelConfig


def bradley_terry_loss(first_returns: torch.Tensor, second_returns: torch.Tensor, preferences: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``P(second preferred) = sigmoid(R2 - R1)`` against ``preferences`` in {0, 0.5, 1}."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        second_returns - first_returns, preferences, reduction="none")
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


class Member(torch.nn.Module):
    """One reward network: encoders + fuser, then an MLP head giving ``r(s, a)``.

    ``head: per-action`` (the default) outputs one reward per action and reads the taken one, as a
    Q-network does; ``head: concat`` reads (features, one-hot action) and outputs one reward.
    """

    def __init__(self, network: torch.nn.Module, num_actions: int, hidden_sizes: Sequence[int],
                 head: str = "per-action") -> None:
        super().__init__()
        self.network = network
        self.num_actions = num_actions
        self.per_action = head == "per-action"
        layers: list[torch.nn.Module] = []
        width = int(network.output_dim) + (0 if self.per_action else num_actions)
        for size in hidden_sizes:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        layers.append(torch.nn.Linear(width, num_actions if self.per_action else 1))
        self.head = torch.nn.Sequential(*layers)

    def forward(self, observations: Mapping[str, Any], actions: torch.Tensor) -> torch.Tensor:
        features = self.network(observations)
        actions = actions.long()
        if self.per_action:
            return self.head(features).gather(1, actions.reshape(-1, 1)).squeeze(1)
        one_hot = torch.nn.functional.one_hot(actions, self.num_actions).to(features.dtype)
        return self.head(torch.cat([features, one_hot], dim=1)).squeeze(1)


class LabelStore:
    """Labelled pairs in memory: the segments' steps concatenated, and one row per label."""

    def __init__(self) -> None:
        self.observations: list[Mapping[str, Any]] = []
        self.actions: list[np.ndarray] = []
        self.env_rewards: list[np.ndarray] = []
        self.first: list[int] = []
        self.second: list[int] = []
        self.preference: list[float] = []
        self.confidence: list[float] = []
        self.heldout: list[bool] = []
        self.bootstrap: list[np.ndarray] = []  # per label: one weight per ensemble member

    def __len__(self) -> int:
        return len(self.preference)

    def add_segment(self, segment: Segment) -> int:
        self.observations.append(dict(segment.observations))
        self.actions.append(np.asarray(segment.actions))
        self.env_rewards.append(np.asarray(segment.env_rewards, dtype=np.float32))
        return len(self.actions) - 1

    def add(self, first: Segment, second: Segment, preference: float, confidence: float, heldout: bool,
            bootstrap: np.ndarray) -> None:
        self.first.append(self.add_segment(first))
        self.second.append(self.add_segment(second))
        self.preference.append(preference)
        self.confidence.append(confidence)
        self.heldout.append(heldout)
        self.bootstrap.append(bootstrap)

    def segments(self, rows: Sequence[int]) -> tuple[list[Mapping[str, Any]], list[np.ndarray]]:
        return [self.observations[i] for i in rows], [self.actions[i] for i in rows]

    def state_dict(self) -> dict[str, Any]:
        if not self.actions:
            return {"labels": 0}
        observations = concatenate(self.observations)
        return {
            "labels": len(self),
            "observations": {k: as_text_array(v) if is_text(v) else v for k, v in observations.items()},
            "lengths": np.array([len(a) for a in self.actions], dtype=np.int64),
            "actions": np.concatenate(self.actions),
            "env_rewards": np.concatenate(self.env_rewards),
            "first": np.array(self.first, dtype=np.int64),
            "second": np.array(self.second, dtype=np.int64),
            "preference": np.array(self.preference, dtype=np.float32),
            "confidence": np.array(self.confidence, dtype=np.float32),
            "heldout": np.array(self.heldout, dtype=bool),
            "bootstrap": np.stack(self.bootstrap).astype(np.float32),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        if not int(state["labels"]):
            return
        ends = np.cumsum(state["lengths"])
        starts = ends - state["lengths"]
        for start, end in zip(starts.tolist(), ends.tolist()):
            self.observations.append({k: (tuple(str(x) for x in v[start:end]) if is_text(v) else np.asarray(v[start:end]))
                                      for k, v in state["observations"].items()})
            self.actions.append(np.asarray(state["actions"][start:end]))
            self.env_rewards.append(np.asarray(state["env_rewards"][start:end]))
        self.first = [int(x) for x in state["first"]]
        self.second = [int(x) for x in state["second"]]
        self.preference = [float(x) for x in state["preference"]]
        self.confidence = [float(x) for x in state["confidence"]]
        self.heldout = [bool(x) for x in state["heldout"]]
        self.bootstrap = [np.asarray(row) for row in state["bootstrap"]]


class PreferenceModel(RewardSource):
    """Reward learned from pairwise preferences over trajectory segments, asked of a feedback source."""

    stationary = False

    def __init__(self, config: PreferenceModelConfig, context: RunContext, registry: Any = None,
                 feedback: FeedbackSource | None = None) -> None:
        self.config = config
        self.segment_length = config.fragment_length
        self.num_actions = int(context.action_space.n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.members = torch.nn.ModuleList([
                Member(context.make_network(), self.num_actions, config.hidden_sizes, config.head)
                for _ in range(config.ensemble_size)
            ])
        self.parameters = [p for p in self.members.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.rng = np.random.default_rng(context.seed)
        if feedback is None:
            if registry is None:
                from polyfuse.registry import default_registry

                registry = default_registry()
            feedback = registry.create("feedback", config.feedback.name, config.feedback.params,
                                       seed=context.seed + 1)
        self.feedback = feedback
        self.pool: deque[Segment] = deque(maxlen=config.pool_size)
        self.store = LabelStore()
        self.asked = 0
        self.abstained = 0
        self.updates = 0
        self.mean, self.std = 0.0, 1.0
        self.trained = False

    # -- predictions -------------------------------------------------------------------------------

    def _step_rewards(self, observations: Mapping[str, Any], actions: np.ndarray) -> torch.Tensor:
        """Per-member rewards of a batch of steps, shape ``(K, N)``."""
        action_tensor = torch.as_tensor(np.asarray(actions))
        return torch.stack([member(observations, action_tensor) for member in self.members])

    def _returns(self, observations: Sequence[Mapping[str, Any]], actions: Sequence[np.ndarray]) -> torch.Tensor:
        """Per-member predicted returns of segments, shape ``(K, len(segments))``."""
        lengths = torch.as_tensor([len(a) for a in actions])
        rewards = self._step_rewards(concatenate(observations), np.concatenate(actions))
        index = torch.repeat_interleave(torch.arange(len(actions)), lengths)
        return torch.zeros(rewards.shape[0], len(actions), dtype=rewards.dtype).index_add_(1, index, rewards)

    def score(self, batch: RewardBatch) -> np.ndarray:
        if not self.trained:
            return np.zeros(len(batch), dtype=np.float32)
        with torch.no_grad():
            rewards = self._step_rewards(batch.observations, batch.actions)
        raw = rewards.mean(0).numpy()
        scores = (raw - self.mean) / self.std
        if self.config.uncertainty_penalty and len(self.members) > 1:
            scores = scores - self.config.uncertainty_penalty * rewards.std(0, unbiased=False).numpy() / self.std
        return scores.astype(np.float32)

    # -- data ---------------------------------------------------------------------------------------

    def observe(self, segments: Sequence[Segment]) -> None:
        self.pool.extend(segment for segment in segments if len(segment))

    def _candidate_pairs(self, count: int) -> list[tuple[int, int]]:
        size = len(self.pool)
        first = self.rng.integers(0, size, count)
        second = (first + self.rng.integers(1, size, count)) % size
        return list(zip(first.tolist(), second.tolist()))

    def _select(self, count: int) -> tuple[list[tuple[int, int]], float]:
        """Pairs to ask about, and the ensemble's mean disagreement on the candidates."""
        if self.config.selection == "random" or not self.trained:
            pairs = self._candidate_pairs(count)
            return pairs, self._disagreement(pairs) if self.config.ensemble_size > 1 else 0.0
        candidates = self._candidate_pairs(count * self.config.candidates_per_query)
        spread = self._pair_spread(candidates)
        chosen = np.argsort(-spread, kind="stable")[:count]
        return [candidates[i] for i in chosen.tolist()], float(spread.mean())

    def _pair_spread(self, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        """Std over members of P(second preferred), per pair."""
        segments = [self.pool[i] for pair in pairs for i in pair]
        with torch.no_grad():
            returns = self._returns([s.observations for s in segments], [s.actions for s in segments])
        probability = torch.sigmoid(returns[:, 1::2] - returns[:, 0::2])
        return probability.std(0, unbiased=False).numpy()

    def _disagreement(self, pairs: Sequence[tuple[int, int]]) -> float:
        return float(self._pair_spread(pairs).mean()) if pairs else 0.0

    def _ask(self) -> dict[str, float]:
        budget = self.config.max_labels - self.asked
        if budget <= 0 or len(self.pool) < 2:
            return {}
        pairs, disagreement = self._select(min(self.config.labels_per_update, budget))
        queries = [Query(self.pool[a], self.pool[b], id=self.asked + n) for n, (a, b) in enumerate(pairs)]
        labels = self.feedback.label(queries)
        self.asked += len(queries)
        for query, label in zip(queries, labels):
            if label is None:
                self.abstained += 1
                continue
            heldout = bool(self.rng.random() < self.config.heldout_fraction)
            bootstrap = self.rng.poisson(1.0, self.config.ensemble_size).astype(np.float32)
            self.store.add(query.first, query.second, label.preference, label.confidence, heldout, bootstrap)
        return {"disagreement": disagreement}

    # -- learning -----------------------------------------------------------------------------------

    def _pair_returns(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        store = self.store
        segment_rows = [i for row in rows for i in (store.first[row], store.second[row])]
        returns = self._returns(*store.segments(segment_rows))
        return returns[:, 0::2], returns[:, 1::2]

    def _train(self) -> float | None:
        training = np.flatnonzero(~np.array(self.store.heldout, dtype=bool))
        if len(training) == 0 or self.config.gradient_steps == 0:
            return None
        bootstrap = np.stack([self.store.bootstrap[i] for i in training])  # (n, K)
        preference = torch.as_tensor([self.store.preference[i] for i in training], dtype=torch.float32)
        confidence = torch.as_tensor([self.store.confidence[i] for i in training], dtype=torch.float32)
        losses = []
        for _ in range(self.config.gradient_steps):
            rows = self.rng.integers(0, len(training), min(self.config.batch_size, len(training)))
            first, second = self._pair_returns(training[rows].tolist())
            weights = torch.as_tensor(bootstrap[rows].T) * confidence[rows]  # (K, B)
            loss = sum(bradley_terry_loss(first[k], second[k], preference[rows], weights[k])
                       for k in range(len(self.members)))
            self.adam.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            self.adam.step()
            losses.append(loss.item() / len(self.members))  # type: ignore[union-attr]
        self.trained = True
        return float(np.mean(losses))

    def heldout_accuracy(self) -> float | None:
        """Share of the held-out strict preferences that the ensemble mean ranks the same way."""
        rows = [i for i, held in enumerate(self.store.heldout) if held and self.store.preference[i] != 0.5]
        if not rows:
            return None
        with torch.no_grad():
            first, second = self._pair_returns(rows)
        predicted = (second.mean(0) > first.mean(0)).numpy()
        return float(np.mean(predicted == (np.array([self.store.preference[i] for i in rows]) == 1.0)))

    def _normalise(self) -> None:
        if not self.config.normalize or not self.pool:
            return
        rows = self.rng.choice(len(self.pool), min(len(self.pool), 1024), replace=False)
        segments = [self.pool[i] for i in rows.tolist()]
        with torch.no_grad():
            raw = self._step_rewards(concatenate([s.observations for s in segments]),
                                     np.concatenate([s.actions for s in segments])).mean(0).numpy()
        self.mean, self.std = float(raw.mean()), float(max(raw.std(), 1e-4))

    def update(self) -> dict[str, float]:
        metrics = self._ask()
        loss = self._train()
        self.updates += 1
        if loss is not None:
            metrics["loss"] = loss
            self._normalise()
        accuracy = self.heldout_accuracy()
        if accuracy is not None:
            metrics["heldout_accuracy"] = accuracy
        return {**metrics, "labels": float(len(self.store)), "asked": float(self.asked),
                "abstained": float(self.abstained), "updates": float(self.updates)}

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"members": self.members.state_dict(), "adam": self.adam.state_dict(),
                "store": self.store.state_dict(), "feedback": self.feedback.state_dict(),
                "rng": json.dumps(self.rng.bit_generator.state),
                "asked": self.asked, "abstained": self.abstained, "updates": self.updates,
                "mean": self.mean, "std": self.std, "trained": self.trained}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.members.load_state_dict(state["members"])
        self.adam.load_state_dict(state["adam"])
        self.store.load_state_dict(state["store"])
        self.feedback.load_state_dict(state["feedback"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.asked, self.abstained = int(state["asked"]), int(state["abstained"])
        self.updates = int(state["updates"])
        self.mean, self.std, self.trained = float(state["mean"]), float(state["std"]), bool(state["trained"])

