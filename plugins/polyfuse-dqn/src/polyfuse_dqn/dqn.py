"""Deep Q-learning on fused multimodal features (Mnih et al. 2015), with the usual improvements.

Double DQN targets, hard or Polyak target updates, Huber loss and a linearly
decaying epsilon-greedy exploration; replay, n-step returns, reward scoring,
seeding and checkpoints come from :class:`polyfuse.rl.off_policy.OffPolicyAlgorithm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.network import ModeSwitch, frozen_twin, load_own_state, own_state
from polyfuse.observations import batch_length, check_dict, take
from polyfuse.rl.base import GeneratorKind
from polyfuse.rl.heads import PolicyNetwork, mlp
from polyfuse.rl.off_policy import OffPolicyAlgorithm
from polyfuse.rl.replay import Transitions
from polyfuse.training.api import Pipeline
from torch.nn import functional

from polyfuse_dqn.plugin import DQNConfig
from polyfuse_dqn.updates import linear_schedule, td_targets, update_target


class DQN(OffPolicyAlgorithm):
    """The ``dqn`` optimizer; ``iterate()`` = ``train_frequency`` env steps + ``gradient_steps`` updates."""

    name = "dqn"
    state_format = 2
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"replay": "numpy", "explore": "numpy", "act": "numpy"}
    config: DQNConfig

    # --- set-up -----------------------------------------------------------------------------------

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        space = pipeline.action_space
        if not isinstance(space, gymnasium.spaces.Discrete):
            raise PolyfuseError(
                f"dqn needs a Discrete action space (one Q-value per action); this environment's is {space}. "
                "Use an optimizer for continuous actions (e.g. ppo) instead"
            )
        super()._check_pipeline(pipeline)
        _ = self.exploration_steps  # raises, naming the fix, when epsilon's schedule has no step count

    def _build(self, pipeline: Pipeline) -> None:
        """The online and target Q-networks (sharing frozen encoders) and Adam."""
        space = pipeline.action_space
        self.num_actions = int(space.n)
        self.action_start = int(space.start)
        trunk = pipeline.make_network()
        head = mlp(trunk.output_dim, self.config.hidden_sizes, self.num_actions, activation="relu")
        self.q_network = PolicyNetwork(trunk, head)
        self.target_network, self._shared_prefixes = frozen_twin(self.q_network)
        self.target_network.train(False)
        self._switch_mode = ModeSwitch(self.q_network)
        # Which weights train is fixed from here on; listing them once keeps a frozen text encoder's
        # hundreds of tensors out of every gradient step.
        self._trainable = [p for p in self.q_network.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self._trainable, lr=self.config.learning_rate, fused=True)

    # --- exploration ------------------------------------------------------------------------------

    @property
    def exploration_steps(self) -> int:
        """The environment steps ``exploration_fraction`` refers to: the config's, else the run's budget."""
        if self.config.exploration_steps is not None:
            return self.config.exploration_steps
        budget = self._require_budget(
            "epsilon's schedule (optimizer.params.exploration_steps: null)",
            "set optimizer.params.exploration_steps",
        )
        if budget.unit != "env_steps":
            raise PolyfuseError(
                f"dqn: epsilon falls over environment steps, and the run's budget counts {budget.unit} "
                "(trainer.budget_unit): set optimizer.params.exploration_steps"
            )
        return budget.total

    @property
    def epsilon(self) -> float:
        """The exploration rate at the current step."""
        config = self.config
        duration = config.exploration_fraction * self.exploration_steps
        return linear_schedule(config.epsilon_start, config.epsilon_end, duration, self.env_steps)

    def _explore(self, observations: Mapping[str, Any]) -> np.ndarray:
        self._epsilon_used = self.epsilon
        return self._epsilon_greedy(observations, self._epsilon_used, self.rng["explore"]) + self.action_start

    def _epsilon_greedy(
        self, observations: Mapping[str, Any], epsilon: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Action indices (from 0); the generator is advanced the same way whatever the network says."""
        size = batch_length(observations)
        explore = rng.random(size) < epsilon
        random_actions = rng.integers(0, self.num_actions, size=size)
        if explore.all():
            return random_actions.astype(np.int64)
        return np.where(explore, random_actions, self._greedy(observations)).astype(np.int64)

    def _greedy(self, observations: Mapping[str, Any]) -> np.ndarray:
        training = self.q_network.training
        self._switch_mode(False)
        try:
            with torch.no_grad():
                q_values = self.q_network(observations)
        finally:
            self._switch_mode(training)
        return q_values.argmax(dim=1).cpu().numpy().astype(np.int64)

    # --- learning ---------------------------------------------------------------------------------

    def _start(self) -> None:
        """The target network starts as the online network, warm start included."""
        update_target(self.target_network, self.q_network, tau=1.0)

    def _iterate(self) -> dict[str, float]:
        metrics = super()._iterate()
        return {"epsilon": float(self._epsilon_used), **metrics}

    def _gradient_step(self, batch: Transitions) -> dict[str, float]:
        config = self.config
        actions = torch.as_tensor(batch.actions - self.action_start, dtype=torch.long)
        targets = self._targets(batch)
        q_values = self.q_network(batch.observations).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = functional.huber_loss(q_values, targets, delta=config.huber_delta)
        self._descend(loss, len(batch))
        if self.gradient_steps % config.target_update_interval == 0:
            update_target(self.target_network, self.q_network, config.tau)
        return {"loss": float(loss.detach()), "q_mean": float(q_values.detach().mean())}

    @torch.no_grad()
    def _targets(self, batch: Transitions) -> torch.Tensor:
        """TD targets; next-state values are computed only for the transitions that bootstrap.

        A terminal transition's target is its reward alone, so its next
        observation never goes through the networks (in a one-step task such
        as DigitsVQA, none does).
        """
        config = self.config
        discounts = batch.bootstrap_discounts(config.gamma)
        targets = torch.tensor(batch.rewards, dtype=torch.float32)
        live = np.flatnonzero(discounts)
        if live.size == 0:
            return targets
        next_observations = batch.next_observations if live.size == len(discounts) \
            else take(batch.next_observations, live)
        next_q_online = self.q_network(next_observations) if config.double_dqn else None
        rows = torch.as_tensor(live)
        targets[rows] = td_targets(
            targets[rows],
            torch.as_tensor(discounts[live], dtype=torch.float32),
            self.target_network(next_observations),
            next_q_online,
        )
        return targets

    # --- acting -----------------------------------------------------------------------------------

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Greedy actions, or epsilon-greedy at the current exploration rate when not ``deterministic``.

        Stochastic actions draw from their own generator, so evaluating never
        changes the training run.
        """
        self._require_setup()
        check_dict(observations, self.name)
        if deterministic:
            actions = self._greedy(observations)
        else:
            actions = self._epsilon_greedy(observations, self.epsilon, self.rng["act"])
        return actions + self.action_start

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The Q-values ``(B, num_actions)``, differentiable (behaviour cloning fits them as logits)."""
        self._require_setup()
        return self.q_network(check_dict(observations, self.name))

    def action_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Epsilon-greedy at the current exploration rate over the Q-values: what sampled actions are drawn from."""
        epsilon = self.epsilon
        probabilities = torch.full_like(logits, epsilon / logits.shape[-1])
        greedy = logits.argmax(dim=-1, keepdim=True)
        return probabilities.scatter_add(-1, greedy, torch.full_like(greedy, 1.0 - epsilon, dtype=logits.dtype))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self._require_setup()
        return list(self._trainable)

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Besides replay and the rest (:meth:`OffPolicyAlgorithm.state_dict`): both Q-networks.

        The target network's entry leaves out the frozen encoders it shares with the online network.
        """
        return {
            **super().state_dict(),
            "q_network": self.q_network.state_dict(),
            "target_network": own_state(self.target_network, self._shared_prefixes),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.q_network.load_state_dict(state["q_network"])
        load_own_state(self.target_network, state["target_network"], self._shared_prefixes)
