"""Direct Preference Optimization (Rafailov et al. 2023) for a policy over a discrete action space.

The policy is the pipeline's encoders + fuser with an MLP head, one logit per
action. It learns offline from preference pairs (observation, preferred
action, rejected action) against a frozen reference policy: a copy of the
policy taken at the first ``iterate()``, i.e. after the trainer's warm start
(or as loaded by ``init_from``). The losses (DPO, IPO, conservative DPO) are
in :mod:`polyfuse_dpo.losses`; seeds, progress and the checkpoint bookkeeping
come from :class:`polyfuse.rl.base.Algorithm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.network import frozen_twin, load_own_state, own_state
from polyfuse.observations import check_dict
from polyfuse.rl import distributions
from polyfuse.rl.base import Algorithm, GeneratorKind
from polyfuse.rl.heads import PolicyNetwork, mlp
from polyfuse.training.api import Pipeline
from polyfuse.training.continuation import load_policy_from

from polyfuse_dpo.losses import action_log_probs, implicit_rewards, preference_loss
from polyfuse_dpo.plugin import DPOConfig

MAKE_PAIRS = "polyfuse preferences ENV_ID -o DIR"
INIT_FROM = "optimizer.params.init_from"


class DPO(Algorithm):
    """The ``dpo`` optimizer: see :class:`polyfuse_dpo.plugin.DPOConfig` for its params."""

    name = "dpo"
    learns_from = "dataset"
    state_format = 1
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"shuffle": "numpy", "act": "torch"}
    config: DPOConfig

    def __init__(self, config: DPOConfig) -> None:
        super().__init__(config)
        self.init_from_optimizer: str | None = None
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0
        self.epochs = 0

    # --- set-up -----------------------------------------------------------------------------------

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        dataset, space = pipeline.dataset, pipeline.action_space
        if dataset is None:
            raise PolyfuseError(
                "dataset: dpo learns offline from preference pairs and this pipeline has no dataset; add "
                "dataset: {name: preferences, params: {path: ...}} (make pairs from an environment's expert with "
                f"`{MAKE_PAIRS}`)"
            )
        if not isinstance(space, gymnasium.spaces.Discrete):
            source = "env.id" if pipeline.envs is not None else "dataset"
            raise PolyfuseError(
                f"optimizer.name: dpo compares two actions of a Discrete action space, and this pipeline's action "
                f"space (from {source}) is {space}; use an environment or dataset with discrete actions, or an "
                "optimizer for other action spaces (e.g. ppo)"
            )
        if not callable(getattr(dataset, "batch", None)):
            raise PolyfuseError(
                f"dataset: dpo reads preference pairs (observation, chosen, rejected), and this dataset is a "
                f"{type(dataset).__name__} without batch(rows); use dataset: {{name: preferences, params: "
                "{path: ...}}"
            )
        if len(dataset) == 0:
            raise PolyfuseError("dataset.params.path: the dataset holds no preference pairs; collect some "
                                f"(`{MAKE_PAIRS} --pairs N`)")
        own_space = getattr(dataset, "action_space", None)
        if own_space is not None and own_space != space:
            raise PolyfuseError(
                f"dataset.params.path: the pairs compare actions of {own_space}, and the pipeline's actions (from "
                f"env.id) are {space}; collect the pairs from this environment (`{MAKE_PAIRS}`), or change env.id"
            )
        for name in ("chosen", "rejected"):
            values = getattr(dataset, name, None)
            if values is not None:
                _check_actions(np.asarray(values), name, space, np.arange(len(dataset)))
        super()._check_pipeline(pipeline)

    def _build(self, pipeline: Pipeline) -> None:
        """The policy, its frozen twin (the reference, sharing frozen encoders) and Adam; ``init_from`` loaded."""
        config, space = self.config, pipeline.action_space
        self.num_actions, self.action_start = int(space.n), int(space.start)
        self.dataset = pipeline.dataset
        trunk = pipeline.make_network()
        head = mlp(trunk.output_dim, config.hidden_sizes, self.num_actions, activation=config.activation)
        self.policy = PolicyNetwork(trunk, head)
        self.reference, self._shared_prefixes = frozen_twin(self.policy)
        self._reference_taken = False
        # Which weights train is fixed from here on; listing them once keeps a frozen text encoder's
        # hundreds of tensors out of every gradient step.
        self._trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self._trainable, lr=config.learning_rate, fused=True)
        self._order, self._cursor, self.epochs = np.zeros(0, dtype=np.int64), 0, 0
        self.init_from_optimizer = None
        if config.init_from is not None:
            self._load_initial_policy()

    def _load_initial_policy(self) -> None:
        """The policy (and so the reference) start from the policy of the run in ``init_from``."""
        self.init_from_optimizer = load_policy_from(self, self.config.init_from, INIT_FROM)

    def load_policy(self, weights: Mapping[str, torch.Tensor]) -> None:
        """The policy's weights, but for the frozen encoders it shares with the reference (this run's own)."""
        own = {key: value for key, value in weights.items()
               if not any(key.startswith(prefix) for prefix in self._shared_prefixes)}
        load_own_state(self.policy, own, self._shared_prefixes)

    # --- learning ---------------------------------------------------------------------------------

    def _start(self) -> None:
        """The reference becomes the policy as it is now: after warm start, or as ``init_from`` loaded it."""
        load_own_state(self.reference, own_state(self.policy, self._shared_prefixes), self._shared_prefixes)
        self._reference_taken = True

    def _next_rows(self) -> np.ndarray:
        """The next minibatch's dataset rows: each epoch is a fresh permutation, cut in order."""
        if self._cursor >= len(self._order):
            self._order = self.rng["shuffle"].permutation(len(self.dataset)).astype(np.int64)
            self._cursor = 0
            self.epochs += 1
        rows = self._order[self._cursor : self._cursor + self.config.batch_size]
        self._cursor += len(rows)
        return rows

    def _iterate(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for _ in range(self.config.gradient_steps):
            for key, value in self._step(self._next_rows()).items():
                sums[key] = sums.get(key, 0.0) + value
        metrics = {key: total / self.config.gradient_steps for key, total in sums.items()}
        metrics["epoch"] = self.samples / len(self.dataset)
        return metrics

    def _step(self, rows: np.ndarray) -> dict[str, float]:
        """One gradient step on the pairs ``rows``; returns the batch's loss and diagnostics."""
        config = self.config
        batch = self.dataset.batch(rows)
        chosen = self._indices(batch.chosen, "chosen", rows)
        rejected = self._indices(batch.rejected, "rejected", rows)
        observations = check_dict(batch.observations, self.name)
        logits = self.policy(observations)
        with torch.no_grad():
            reference_logits = self.reference(observations)
        reward_chosen = implicit_rewards(action_log_probs(logits, chosen),
                                         action_log_probs(reference_logits, chosen), config.beta)
        reward_rejected = implicit_rewards(action_log_probs(logits, rejected),
                                           action_log_probs(reference_logits, rejected), config.beta)
        h = reward_chosen - reward_rejected
        loss = preference_loss(h, config.beta, config.loss, config.label_smoothing).mean()
        self._descend(loss, len(rows))
        with torch.no_grad():
            kl = distributions.kl_divergence(logits, reference_logits, (self.num_actions,)).mean()
            probabilities = torch.softmax(logits, dim=-1)
            return {
                "loss": float(loss),
                "accuracy": float((h > 0).float().mean()),
                "margin": float(h.mean()),
                "reward_chosen": float(reward_chosen.mean()),
                "reward_rejected": float(reward_rejected.mean()),
                "kl_to_reference": float(kl),
                "prob_chosen": float(probabilities.gather(1, chosen.unsqueeze(1)).mean()),
                "prob_rejected": float(probabilities.gather(1, rejected.unsqueeze(1)).mean()),
            }

    def _indices(self, actions: Any, name: str, rows: np.ndarray) -> torch.Tensor:
        values = np.asarray(actions, dtype=np.int64)
        _check_actions(values, name, self.pipeline.action_space, rows)
        return torch.from_numpy(values - self.action_start)

    # --- acting -----------------------------------------------------------------------------------

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """The most likely actions, or actions sampled from the policy (own generator) when not ``deterministic``."""
        self._require_setup()
        with torch.no_grad():
            logits = self.policy(check_dict(observations, self.name))
        nvec = (self.num_actions,)
        indices = distributions.mode(logits, nvec) if deterministic else \
            distributions.sample(logits, nvec, self.rng["act"])
        return indices[:, 0].cpu().numpy().astype(np.int64) + self.action_start

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The policy's logits ``(B, n)``, differentiable (warm start fits them to the expert's labels)."""
        self._require_setup()
        return self.policy(check_dict(observations, self.name))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self._require_setup()
        return list(self._trainable)

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Besides :meth:`Algorithm.state_dict`'s: the policy, the reference and the epoch's shuffle.

        The reference leaves out the frozen encoders it shares with the
        policy, and is ``None`` until the first ``iterate()`` takes it.
        """
        reference = own_state(self.reference, self._shared_prefixes) if self._reference_taken else None
        return {
            **super().state_dict(),
            "policy": self.policy.state_dict(),
            "reference": reference,
            "shuffle": {"order": self._order.copy(), "cursor": self._cursor, "epochs": self.epochs},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        if state["reference"] is not None:
            load_own_state(self.reference, state["reference"], self._shared_prefixes)
            self._reference_taken = True
        else:  # saved before the first iterate: the reference is taken then, from the restored policy
            self._reference_taken = False
            self._started = False
        shuffle = state["shuffle"]
        order = np.asarray(shuffle["order"], dtype=np.int64)
        if order.size and (order.size != len(self.dataset)):
            raise PolyfuseError(
                f"dataset.params.path: the checkpoint was saved while training on {order.size} pairs, and the "
                f"dataset now holds {len(self.dataset)}; resume with the same dataset, or start a new run"
            )
        self._order, self._cursor, self.epochs = order, int(shuffle["cursor"]), int(shuffle["epochs"])


def _check_actions(values: np.ndarray, name: str, space: gymnasium.spaces.Discrete, rows: np.ndarray) -> None:
    """Refuse actions outside ``space``, naming the first such pair (``rows``: the values' dataset rows)."""
    start, n = int(space.start), int(space.n)
    outside = np.flatnonzero((values < start) | (values >= start + n))
    if outside.size:
        first = int(outside[0])
        raise PolyfuseError(
            f"dataset.params.path: pair {int(rows[first]) + 1}'s {name} action {int(values[first])} is not an "
            "action of the "
            f"pipeline's action space {space} (from env.id when set, else the dataset); the pairs do not fit this "
            f"environment: collect them from it (`{MAKE_PAIRS}`), or change env.id"
        )
