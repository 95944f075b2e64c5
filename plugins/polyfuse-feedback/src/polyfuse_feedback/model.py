"""The ``preference-model`` reward: an ensemble of reward networks fitted to feedback on the policy's behaviour.

Each member is the pipeline's encoders + fuser (``context.make_network()``;
frozen encoders are shared with the policy's networks) and an MLP head giving
``r(s, a)``. A segment's predicted return is the sum of its steps' rewards.
Comparisons are fitted with the Bradley–Terry loss (``P(second preferred) =
sigmoid(R2 - R1)``, ties as 0.5 targets), ratings and good/bad labels with an
ordinal (cumulative-logit) loss on the same return, each member on its own
bootstrap weights of the labels (all 1 with ``bootstrap: false``) (and, with ``pseudo_labels``, on its own confident predictions for
unlabelled pairs of the pool: :mod:`polyfuse_feedback.pseudo_labels`). ``score()`` is the ensemble
mean, scaled (see :meth:`normalise`).

A comparison pairs two segments of the pool (``pairing: random``) or, in a one-step (bandit) task,
the policy's action and another one in the same context (``pairing: same-context``): as RLHF for
language models compares two completions of one prompt, the pair isolates the answer, and its
outcome comes from the environment restored to that context (:mod:`polyfuse.training.replay`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.distributions import Bernoulli, Categorical
from gymnasium import spaces as gym_spaces
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import MAX_SCALE, Query
from polyfuse.observations import concatenate
from polyfuse.rewards import RewardBatch, RewardSource, RunContext, Segment
from polyfuse.training.replay import ReplayableSegment

from polyfuse_feedback.labels import LabelRow, LabelSet
from polyfuse_feedback.neighbours import NeighbourConsistency
from polyfuse_feedback.networks import Member, bradley_terry_loss, ordinal_loss
from polyfuse_feedback.pseudo_labels import PseudoLabeller
from polyfuse_feedback.saved import load_members, read_saved_reward
from polyfuse_feedback.schedule import query_counts

if TYPE_CHECKING:
    from polyfuse_feedback.plugin import PreferenceModelConfig
    from polyfuse_feedback.routing import Answer, Router

RATING_SCALES = range(2, MAX_SCALE + 1)
RECORDED = ("heldout_accuracy", "return_correlation", "labels", "segment_env_return")  # kept in the label store for the admin page


def reward_network_factory(config: PreferenceModelConfig, context: RunContext) -> Any:
    """The pipeline's encoders + fuser, or the reward's own (``modalities``, ``fuser``) over the same observations."""
    if config.modalities is None and config.fuser is None:
        return context.make_network
    if not hasattr(context.make_network, "variant"):
        raise ValueError("the reward's own modalities/fuser need the run's NetworkFactory as context.make_network")
    modalities = None if config.modalities is None else {
        name: modality.model_dump(mode="json") for name, modality in config.modalities.items()}
    fuser = None if config.fuser is None else config.fuser.model_dump(mode="json")
    return context.make_network.variant(modalities, fuser)


def named_actions(config: PreferenceModelConfig, context: RunContext) -> tuple[str, ...] | None:
    """The action names ``head: named`` embeds, checked against the observations before anything is built."""
    if config.head != "named":
        return None
    where = "reward.params.action_text"
    spaces = getattr(context.observation_space, "spaces", {})
    text = sorted(key for key, space in spaces.items() if isinstance(space, gym_spaces.Text))
    if config.action_text not in spaces or not isinstance(spaces[config.action_text], gym_spaces.Text):
        raise PolyfuseError(f"{where}: head: named embeds the action names with the encoder of a text observation; "
                            f"{config.action_text!r} is not one (text observations: {text or 'none'})")
    names = context.action_names
    if names is None or len(names) != int(context.action_space.n):
        raise PolyfuseError(f"reward.params.head: named needs the environment to name its {context.action_space.n} "
                            f"actions (an `answers` list, an `actions` enum or get_action_meanings()); "
                            f"{context.env_id or 'this environment'} names {'none' if names is None else len(names)}")
    return names


class PreferenceModel(RewardSource):
    """Reward learned from comparisons and ratings of trajectory segments, asked of feedback sources."""

    stationary = False

    def __init__(self, config: PreferenceModelConfig, context: RunContext, router: Router | None) -> None:
        """``router`` is ``None`` for a model that asks nothing (scoring with saved weights, offline training)."""
        self.config = config
        self.segment_length = config.fragment_length
        self.num_actions = int(context.action_space.n)
        self.env_id = context.env_id
        make_network = reward_network_factory(config, context)
        action_names = named_actions(config, context)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.members = torch.nn.ModuleList([
                Member(make_network(), self.num_actions, config.hidden_sizes, config.head, RATING_SCALES,
                       action_names, config.action_text)
                for _ in range(config.ensemble_size)
            ])
        self.parameters = [p for p in self.members.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.rng = np.random.default_rng(context.seed)
        if context.planned_updates is None:
            raise ValueError("the preference model spreads its label budget over the run's reward updates: "
                             "RunContext.planned_updates must be set")
        self.schedule = query_counts(config.max_labels, context.planned_updates, config.initial_share,
                                     config.schedule, config.query_until)
        self.router = router
        self.pool: deque[Segment] = deque(maxlen=config.pool_size)
        self._returns_seen: list[float] = []  # true returns of the segments since the last update
        self.labels = LabelSet(context.seed, config.ensemble_size, config.heldout_fraction, config.bootstrap)
        self.pseudo = PseudoLabeller(config.pseudo_labels, context.seed) if config.pseudo_labels else None
        self.neighbours = (NeighbourConsistency(config.neighbour_consistency, context.seed)
                           if config.neighbour_consistency else None)
        if self.neighbours is not None and isinstance(context.observation_space, gym_spaces.Dict):
            modalities = context.observation_space.spaces
            self.neighbours.check(list(modalities),
                                  [key for key, space in modalities.items() if isinstance(space, gym_spaces.Text)])
        self.updates = 0
        self.std = 1.0
        self.trained = False
        if config.init_from:
            load_members(self, read_saved_reward(config.init_from), config.init_from)

    # -- predictions -------------------------------------------------------------------------------

    def _step_rewards(self, observations: Mapping[str, Any], actions: np.ndarray) -> torch.Tensor:
        """Per-member rewards of a batch of steps, shape ``(K, N)``."""
        action_tensor = torch.as_tensor(np.asarray(actions))
        return torch.stack([member(observations, action_tensor) for member in self.members])

    def _action_rewards(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """Per-member rewards of every action, shape ``(K, N, actions)``."""
        return torch.stack([member.action_rewards(observations) for member in self.members])

    def _returns(self, segments: Sequence[Segment]) -> torch.Tensor:
        """Per-member predicted returns of segments, shape ``(K, len(segments))``."""
        lengths = torch.as_tensor([len(s) for s in segments])
        rewards = self._step_rewards(concatenate([s.observations for s in segments]),
                                     np.concatenate([s.actions for s in segments]))
        index = torch.repeat_interleave(torch.arange(len(segments)), lengths)
        return torch.zeros(rewards.shape[0], len(segments), dtype=rewards.dtype).index_add_(1, index, rewards)

    def predict_returns(self, segments: Sequence[Segment]) -> np.ndarray:
        """Each member's predicted (unnormalised) return of each segment, shape ``(members, len(segments))``."""
        if not segments:
            return np.zeros((len(self.members), 0), dtype=np.float32)
        with torch.no_grad():
            return self._returns(segments).numpy()

    def score(self, batch: RewardBatch) -> np.ndarray:
        if not self.trained:
            return np.zeros(len(batch), dtype=np.float32)
        with torch.no_grad():
            rewards = self._step_rewards(batch.observations, batch.actions)
        scores = rewards.mean(0).numpy() / self.std
        if self.config.uncertainty_penalty and len(self.members) > 1:
            scores = scores - self.config.uncertainty_penalty * rewards.std(0, unbiased=False).numpy() / self.std
        return scores.astype(np.float32)

    def estimate(self, observations: Mapping[str, Any], actions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The ensemble's mean reward and its members' spread, on the training scale (no uncertainty penalty);
        None before the model was ever fitted (it knows nothing yet)."""
        if not self.trained:
            return None
        with torch.no_grad():
            rewards = self._step_rewards(observations, actions)
        spread = rewards.std(0, unbiased=False).numpy() / self.std if len(self.members) > 1 else None
        return (rewards.mean(0).numpy() / self.std).astype(np.float32), spread

    # -- asking ------------------------------------------------------------------------------------

    def observe(self, segments: Sequence[Segment]) -> None:
        if self.config.pairing == "same-context" and self.router is not None:  # it asks: it replays
            self._check_replayable(segments)
        self.pool.extend(segment for segment in segments if len(segment))
        self._returns_seen += [float(np.sum(s.env_rewards)) for s in segments if len(s)]

    def _check_replayable(self, segments: Sequence[Segment]) -> None:
        """Same-context pairs need one-step segments whose context the environment can be restored to."""
        for segment in segments:
            if not isinstance(segment, ReplayableSegment):
                raise PolyfuseError(
                    f"reward.params.pairing: same-context tries another action where a segment began, which needs "
                    f"an environment that can be restored there; {self.env_id or 'this environment'} cannot (no "
                    "get_state/set_state on its unwrapped env, nor episode_states/scratch_env on its vector env: "
                    "see polyfuse.training.vector_env.episode_replayer). Use pairing: random")
            if len(segment) != 1:
                raise PolyfuseError(
                    f"reward.params.pairing: same-context compares two actions in one context, so it needs one-step "
                    f"segments (a bandit task such as DigitsVQA, or fragment_length: 1); these last {len(segment)} "
                    "steps. Set fragment_length: 1, or use pairing: random")

    def _candidates(self, count: int, comparison: bool) -> list[tuple[int, int | None]]:
        """``count`` random segments or pairs from the pool, without repeats (unless the pool is too small)."""
        size = len(self.pool)
        first = self.rng.integers(0, size, count)
        if not comparison:
            candidates: list[tuple[int, int | None]] = [(int(a), None) for a in first]
        else:
            second = (first + self.rng.integers(1, size, count)) % size
            candidates = [(int(a), int(b)) for a, b in zip(first, second)]
        unique = list(dict.fromkeys(candidates))
        return unique if len(unique) * 2 >= count else candidates

    def _candidate_returns(self, candidates: Sequence[tuple[int, int | None]]) -> tuple[torch.Tensor, dict[int, int]]:
        """Per-member returns of the pool segments the candidates name, ``(K, rows)``, and each one's column."""
        rows = sorted({i for pair in candidates for i in pair if i is not None})
        returns = torch.as_tensor(self.predict_returns([self.pool[i] for i in rows]))
        return returns, {row: n for n, row in enumerate(rows)}

    def _uncertainty(self, candidates: Sequence[tuple[int, int | None]]) -> np.ndarray:
        """Ensemble spread per candidate: std of P(second preferred), or of the return for a rating."""
        if len(self.members) == 1 or not self.trained or not candidates:
            return np.zeros(len(candidates))
        returns, position = self._candidate_returns(candidates)
        spread = []
        for first, second in candidates:
            r1 = returns[:, position[first]]
            if second is None:
                spread.append(float(r1.std(unbiased=False) / self.std))
            else:
                spread.append(float(torch.sigmoid(returns[:, position[second]] - r1).std(unbiased=False)))
        return np.array(spread)

    def _preference_entropy(self, candidates: Sequence[tuple[int, int | None]]) -> np.ndarray:
        """Entropy (nats) of the ensemble mean's P(second preferred) per pair (PEBBLE's entropy sampling); 0 for
        a rating, so that ratings stay a random draw."""
        if not self.trained or not candidates:
            return np.zeros(len(candidates))
        returns, position = self._candidate_returns(candidates)
        mean = returns.mean(0)
        return np.array([0.0 if second is None else
                         float(Bernoulli(logits=mean[position[second]] - mean[position[first]]).entropy())
                         for first, second in candidates])

    def _segment_action_rewards(self, segments: Sequence[Segment]) -> np.ndarray | None:
        """Per-member rewards of every action in the one-step segments' contexts, ``(K, len, actions)``; ``None`` untrained."""
        if not self.trained:
            return None
        with torch.no_grad():
            return self._action_rewards(concatenate([segment.observations for segment in segments])).numpy()

    def _alternatives(self, taken: np.ndarray, rewards: np.ndarray | None) -> np.ndarray:
        """Another action per context: drawn from the ensemble's softmax after the taken one (its best at
        temperature 0), or (epsilon, untrained) uniform."""
        uniform = (taken + self.rng.integers(1, self.num_actions, len(taken))) % self.num_actions
        if rewards is None:
            return uniform
        mean = rewards.mean(0)
        mean[np.arange(len(taken)), taken] = -np.inf
        temperature = self.config.alternative_temperature
        if temperature == 0:
            ranked = mean.argmax(1)
        else:
            weights = np.exp((mean - mean.max(1, keepdims=True)) / temperature)
            ranked = np.array([self.rng.choice(self.num_actions, p=row / row.sum()) for row in weights])
        explore = self.rng.random(len(taken)) < self.config.alternative_epsilon
        return np.where(explore, uniform, ranked)

    def _same_context_pairs(self, wanted: int, active: bool) -> tuple[list[tuple[Segment, Segment | None]], np.ndarray]:
        """Pool segments, each against another action in its context replayed by the environment, in random order."""
        count = wanted * (self.config.candidates_per_query if active else 1)
        picked = self.rng.choice(len(self.pool), count, replace=count > len(self.pool))
        segments = [self.pool[i] for i in picked.tolist()]
        taken = np.array([int(segment.actions[0]) for segment in segments])
        rewards = self._segment_action_rewards(segments)
        if self.config.pair_answers == "top-two" and rewards is not None:
            taken = rewards.mean(0).argmax(1)  # the ensemble's best in place of the policy's
        alternatives = self._alternatives(taken, rewards)
        spread = np.zeros(len(segments))
        if rewards is not None and self.config.selection == "entropy":
            # which answer is best in this context: the model's doubt
            spread = Categorical(logits=torch.as_tensor(rewards.mean(0))).entropy().numpy()
        elif rewards is not None and len(self.members) > 1:
            index = np.arange(len(segments))
            difference = torch.as_tensor(rewards[:, index, alternatives] - rewards[:, index, taken])
            spread = torch.sigmoid(difference).std(0, unbiased=False).numpy()
        keep = np.argsort(-spread, kind="stable")[:wanted] if active else np.arange(min(wanted, len(segments)))
        pairs: list[tuple[Segment, Segment | None]] = []
        for i in keep.tolist():
            segment = segments[i]
            assert isinstance(segment, ReplayableSegment)  # observe() checked
            first, other = (segment if int(segment.actions[0]) == action else segment.replay([action])
                            for action in (taken[i], alternatives[i]))
            pairs.append((first, other) if self.rng.random() < 0.5 else (other, first))
        return pairs, spread[keep]

    def _select(self, count: int) -> tuple[list[tuple[Segment, Segment | None]], np.ndarray]:
        """What to ask about (pairs of segments, or single segments for ratings), with the ensemble's uncertainty."""
        ratings = int(self.rng.binomial(count, self.config.rating_share)) if self.config.rating_share else 0
        chosen: list[tuple[Segment, Segment | None]] = []
        spreads: list[np.ndarray] = []
        for comparison, wanted in ((True, count - ratings), (False, ratings)):
            if wanted == 0:
                continue
            active = self.config.selection != "random" and self.trained
            if comparison and self.config.pairing == "same-context":
                share = self.config.same_context_share
                same = wanted if share == 1 else int(self.rng.binomial(wanted, share))
                if same:
                    pairs, spread = self._same_context_pairs(same, active)
                    chosen += pairs
                    spreads.append(spread)
                wanted -= same
                if wanted == 0:
                    continue
            candidates = self._candidates(wanted * (self.config.candidates_per_query if active else 1), comparison)
            spread = (self._preference_entropy(candidates) if self.config.selection == "entropy"
                      else self._uncertainty(candidates))
            keep = np.argsort(-spread, kind="stable")[:wanted] if active else np.arange(min(wanted, len(candidates)))
            chosen += [(self.pool[a], None if b is None else self.pool[b]) for a, b in (candidates[i] for i in keep)]
            spreads.append(spread[keep])
        return chosen, np.concatenate(spreads) if spreads else np.zeros(0)

    def _ask(self) -> dict[str, float]:
        """Ask this update's share of the budget (less what a stopped run already asked past its checkpoint)."""
        if self.router is None:
            return {}
        count = sum(self.schedule[: self.updates + 1]) - self.router.asked()
        if count <= 0 or len(self.pool) < 2:
            return {}
        chosen, spread = self._select(count)
        queries = [Query(first, second, scale=0 if second is not None else self.config.rating_scale,
                         priority=float(s)) for (first, second), s in zip(chosen, spread)]
        self.router.ask(queries)
        if not self.trained:
            return {}
        if self.config.selection == "entropy":
            return {"query_entropy": float(spread.mean())}
        return {"uncertainty": float(spread.mean())} if len(self.members) > 1 else {}

    def _collect(self) -> None:
        self.add_answers(self.router.collect() if self.router is not None else [])

    def add_answers(self, answers: Sequence[Answer]) -> None:
        """Labels to learn from (what the router collected, or a stored label set for offline training)."""
        for answer in answers:
            query = answer.query
            if query.second is None and query.scale not in RATING_SCALES:
                raise PolyfuseError(f"label {answer.label_id} rates on a scale of {query.scale}; the preference "
                                    f"model learns ratings on scales of {RATING_SCALES.start} to "
                                    f"{RATING_SCALES.stop - 1} levels")
            second = None if query.second is None else (answer.second_id, query.second)
            self.labels.add(answer.label_id, (answer.first_id, query.first), second, answer.label,
                            query.scale, answer.weight)

    # -- learning -----------------------------------------------------------------------------------

    def _loss(self, rows: Sequence[LabelRow]) -> torch.Tensor:
        """Summed over members: Bradley–Terry on the comparisons, ordinal on the ratings among ``rows``."""
        segment_ids = sorted({i for row in rows for i in (row.first, row.second) if i is not None})
        position = {segment_id: n for n, segment_id in enumerate(segment_ids)}
        returns = self._returns(self.labels.segments_of(segment_ids))
        weights = torch.as_tensor(np.stack([row.bootstrap * row.weight for row in rows]).T)  # (K, B)
        comparisons = [n for n, row in enumerate(rows) if row.second is not None]
        loss = torch.zeros(())
        if comparisons:
            first = returns[:, [position[rows[n].first] for n in comparisons]]
            second = returns[:, [position[rows[n].second] for n in comparisons]]  # type: ignore[index]
            target = torch.as_tensor([rows[n].preference for n in comparisons], dtype=torch.float32)
            loss = loss + sum(bradley_terry_loss(first[k], second[k], target, weights[k, comparisons],
                                                 self.config.margin) for k in range(len(self.members)))
        for scale in sorted({row.scale for row in rows if row.second is None}):
            rated = [n for n, row in enumerate(rows) if row.second is None and row.scale == scale]
            target = torch.as_tensor([rows[n].rating for n in rated])
            segment_returns = returns[:, [position[rows[n].first] for n in rated]]
            loss = loss + sum(ordinal_loss(segment_returns[k], target, member.thresholds[str(scale)](),
                                           weights[k, rated]) for k, member in enumerate(self.members))
        return loss

    def fit(self, steps: int) -> float | None:
        """``steps`` Adam steps on batches of the training labels; the mean loss per member (``None``: no labels)."""
        training = self.labels.split(heldout=False)
        if not training or steps == 0:
            return None
        losses = []
        if self.neighbours is not None:
            self.neighbours.rebuild(list(self.labels.segments.values()), self.pool)
        for _ in range(steps):
            rows = self.rng.integers(0, len(training), min(self.config.batch_size, len(training)))
            loss = self._loss([training[i] for i in rows.tolist()])
            if self.pseudo is not None:
                loss = loss + self.pseudo.loss(self.pool, len(rows), self._returns)
            if self.neighbours is not None:
                loss = loss + self.neighbours.loss(len(rows), self._action_rewards)
            self.adam.zero_grad()
            loss.backward()
            self.adam.step()
            losses.append(loss.item() / len(self.members))
        self.trained = True
        return float(np.mean(losses))

    def heldout_accuracy(self) -> float | None:
        """Share of the held-out strict preferences that the ensemble mean ranks the same way."""
        rows = [r for r in self.labels.split(heldout=True) if r.second is not None and r.preference != 0.5]
        if not rows:
            return None
        returns = self.predict_returns(self.labels.segments_of([i for r in rows for i in (r.first, r.second)]))
        mean = returns.mean(0)
        predicted = mean[1::2] > mean[0::2]
        return float(np.mean(predicted == np.array([r.preference == 1.0 for r in rows])))

    def return_correlation(self) -> float | None:
        """Pearson correlation of predicted and true (environment) returns over the pool's segments."""
        if len(self.pool) < 3:
            return None
        rows = self.rng.choice(len(self.pool), min(len(self.pool), 512), replace=False)
        segments = [self.pool[i] for i in rows.tolist()]
        true = np.array([float(np.sum(s.env_rewards)) for s in segments])
        predicted = self.predict_returns(segments).mean(0)
        if true.std() == 0 or predicted.std() == 0:
            return None
        return float(np.corrcoef(true, predicted)[0, 1])

    def normalise(self) -> None:
        """Scale scores so that the pool's segment returns have unit variance (when ``normalize``).

        Not centred, and scaled by returns rather than steps: with episodes of different lengths the
        per-step level is what the labels taught about length (a step penalty is what makes a shorter
        success better). Centring per step removed it, and per-step scaling blew it up to a penalty PPO's
        value function could not follow; on BabyAI-GoToLocalS6N2 either left the policy below its warm
        start (0.06-0.62 held-out success), this one reached 0.885.
        """
        if not self.config.normalize or not self.pool:
            return
        rows = self.rng.choice(len(self.pool), min(len(self.pool), 1024), replace=False)
        returns = self.predict_returns([self.pool[i] for i in rows.tolist()]).mean(0)
        self.std = float(max(returns.std(), 1e-4))

    def update(self) -> dict[str, float]:
        metrics = self._ask()
        self._collect()
        loss = self.fit(self.config.gradient_steps)
        self.updates += 1
        if loss is not None:
            metrics["loss"] = loss
            self.normalise()
        for key, value in (("heldout_accuracy", self.heldout_accuracy()),
                           ("return_correlation", self.return_correlation() if self.trained else None)):
            if value is not None:
                metrics[key] = value
        metrics.update(labels=float(len(self.labels)), updates=float(self.updates))
        if self.pseudo is not None:
            metrics.update(self.pseudo.metrics())
        if self.neighbours is not None:
            metrics.update(self.neighbours.metrics())
        if self._returns_seen:  # how the policy does by the environment's own reward, where it has one
            metrics["segment_env_return"] = float(np.mean(self._returns_seen))
            self._returns_seen = []
        if self.router is not None:
            self.router.record(self.updates, {key: metrics[key] for key in RECORDED if key in metrics})
            metrics.update(asked=float(self.router.asked()), **self.router.metrics())
        return metrics

    def close(self) -> None:
        if self.router is not None:
            self.router.close()

    # -- checkpoints --------------------------------------------------------------------------------
    # Labels live in the label store, not here: a resumed run reads all of its project's labels back
    # (those that arrived after the checkpoint too) and re-asks the queries left unanswered.

    def state_dict(self) -> dict[str, Any]:
        return {"members": self.members.state_dict(), "adam": self.adam.state_dict(),
                "router": self.router.state_dict() if self.router is not None else {},
                "rng": json.dumps(self.rng.bit_generator.state),
                "updates": self.updates, "std": self.std, "trained": self.trained,
                **({"pseudo_rng": json.dumps(self.pseudo.rng.bit_generator.state)} if self.pseudo else {}),
                **({"neighbour_rng": json.dumps(self.neighbours.rng.bit_generator.state)} if self.neighbours else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.members.load_state_dict(state["members"])
        self.adam.load_state_dict(state["adam"])
        if self.router is not None:
            self.router.load_state_dict(state["router"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        if self.pseudo is not None and "pseudo_rng" in state:  # absent when the run began without pseudo-labels
            self.pseudo.rng.bit_generator.state = json.loads(state["pseudo_rng"])
        if self.neighbours is not None and "neighbour_rng" in state:  # absent when the run began without them
            self.neighbours.rng.bit_generator.state = json.loads(state["neighbour_rng"])
        self.updates = int(state["updates"])
        self.std, self.trained = float(state["std"]), bool(state["trained"])
        if self.router is not None:
            self.router.resume()
