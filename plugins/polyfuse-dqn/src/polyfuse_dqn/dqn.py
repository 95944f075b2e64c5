"""Deep Q-learning on fused multimodal features (Mnih et al. 2015), with the usual improvements.

Double DQN targets, n-step returns, hard or Polyak target updates, Huber loss,
gradient clipping and a linearly decaying epsilon-greedy exploration. The
replay buffer keeps raw observations, so trainable encoders learn from
replayed data too.

Randomness: every stream comes from ``pipeline.seed`` (network initialisation
in a forked torch generator, replay sampling, exploration, stochastic
``act``), so the same seed gives the same run, and ``state_dict`` saves every
stream, so a resumed run continues them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np
import torch
from torch.nn import functional

from polyfuse.errors import PolyfuseError
from polyfuse.network import ModeSwitch, frozen_twin, load_own_state, own_state
from polyfuse.training.api import Pipeline, RLOptimizer
from polyfuse_dqn.network import QNetwork
from polyfuse_dqn.nstep import NStepAccumulator
from polyfuse_dqn.observations import batch_length, check_dict, take
from polyfuse_dqn.plugin import DQNConfig
from polyfuse_dqn.replay import ReplayBuffer, Transitions
from polyfuse_dqn.rng import generator_state, set_generator_state
from polyfuse_dqn.updates import bootstrap_discounts, linear_schedule, td_targets, update_target

STATE_FORMAT = 1


class DQN(RLOptimizer):
    """The ``dqn`` optimizer; ``iterate()`` = ``train_frequency`` env steps + ``gradient_steps`` updates."""

    def __init__(self, config: DQNConfig) -> None:
        self.config = config
        self._pipeline: Pipeline | None = None
        self._budget: int | None = None  # from set_total_steps()

    def set_total_steps(self, total_steps: int) -> None:
        """The run's step budget, which exploration follows unless the config sets ``exploration_steps``."""
        if int(total_steps) <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self._budget = int(total_steps)

    @property
    def exploration_steps(self) -> int:
        """The step budget ``exploration_fraction`` refers to (config first, then set_total_steps())."""
        steps = self.config.exploration_steps if self.config.exploration_steps is not None else self._budget
        return int(steps or 0)  # setup() refuses to start without one

    # --- set-up ---------------------------------------------------------------------------------

    def setup(self, pipeline: Pipeline) -> None:
        """Build the online and target Q-networks, Adam, the replay buffer; reset the environments.

        The environments are reset without a seed: seed them when building
        them (``polyfuse.envs.make_vector_env`` does), so that a resumed run,
        whose environments the trainer seeds anew, plays new episodes.
        """
        config = self.config
        space = pipeline.action_space
        if not isinstance(space, gymnasium.spaces.Discrete):
            raise PolyfuseError(
                f"dqn needs a Discrete action space (one Q-value per action); this environment's is {space}. "
                "Use an optimizer for continuous actions (e.g. ppo) instead"
            )
        if config.exploration_steps is None and self._budget is None:
            raise PolyfuseError(
                "dqn: exploration needs a step budget; set optimizer.params.exploration_steps, or call "
                "set_total_steps() before setup() (the trainer does)"
            )
        self._pipeline = pipeline
        self.envs = pipeline.envs
        self.device = torch.device(pipeline.device)
        self.num_actions = int(space.n)
        self.action_start = int(space.start)
        torch_seed, replay_seed, explore_seed, act_seed = np.random.SeedSequence(pipeline.seed).spawn(4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch_seed.generate_state(1)[0]))
            self.q_network = self._build_network(pipeline)
        self.target_network, self._shared_prefixes = frozen_twin(self.q_network)  # shares frozen encoders
        self.target_network.train(False)
        self._switch_mode = ModeSwitch(self.q_network)
        # Which weights train is fixed from here on; listing them once keeps a frozen text encoder's
        # hundreds of tensors out of every gradient step.
        self._trainable = [p for p in self.q_network.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self._trainable, lr=config.learning_rate, fused=True)
        self.replay = ReplayBuffer(config.buffer_size, np.random.default_rng(replay_seed))
        self.nstep = NStepAccumulator(config.n_step, config.gamma, self.envs.num_envs)
        self._explore_rng = np.random.default_rng(explore_seed)
        self._act_rng = np.random.default_rng(act_seed)
        self.num_timesteps = 0  # transitions collected (env steps summed over the vector envs)
        self.num_updates = 0  # gradient steps
        self.num_iterations = 0
        self._target_synced = False  # becomes True on the first iterate (after any warm start)
        observations, _ = self.envs.reset()
        self._observations = check_dict(observations)

    def _build_network(self, pipeline: Pipeline) -> QNetwork:
        return QNetwork(pipeline.make_network(), self.num_actions, self.config.hidden_sizes).to(self.device)

    def _require_setup(self) -> None:
        if self._pipeline is None:
            raise RuntimeError("call setup(pipeline) first")

    # --- training -------------------------------------------------------------------------------

    @property
    def epsilon(self) -> float:
        """The exploration rate at the current step."""
        config = self.config
        duration = config.exploration_fraction * self.exploration_steps
        step = getattr(self, "num_timesteps", 0)
        return linear_schedule(config.epsilon_start, config.epsilon_end, duration, step)

    def iterate(self) -> dict[str, float]:
        self._require_setup()
        config = self.config
        if not self._target_synced:  # warm start may have changed the online network since setup
            update_target(self.target_network, self.q_network, tau=1.0)
            self._target_synced = True
        epsilon = self.epsilon
        for _ in range(config.train_frequency):
            epsilon = self.epsilon
            actions = self._epsilon_greedy(self._observations, epsilon, self._explore_rng)
            observations, rewards, terminated, truncated, _ = self.envs.step(actions + self.action_start)
            completed = self.nstep.push(
                self._observations, actions, rewards, terminated, truncated, self.envs.next_observations
            )
            if completed is not None:
                self.replay.add(completed)
            self._observations = observations
            self.num_timesteps += self.envs.num_envs
        self.num_iterations += 1
        metrics = {"epsilon": float(epsilon), "buffer_size": float(len(self.replay))}
        if self.num_timesteps >= config.learning_starts and len(self.replay) > 0:
            losses, q_means = zip(*(self._gradient_step() for _ in range(config.gradient_steps)))
            metrics["loss"] = float(np.mean(losses))
            metrics["q_mean"] = float(np.mean(q_means))
        return metrics

    def _gradient_step(self) -> tuple[float, float]:
        config = self.config
        batch = self.replay.sample(config.batch_size)
        actions = torch.as_tensor(batch.actions, dtype=torch.long, device=self.device)
        targets = self._targets(batch)
        q_values = self.q_network(batch.observations).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = functional.huber_loss(q_values, targets, delta=config.huber_delta)
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._trainable, config.max_grad_norm)
        self.adam.step()
        self.num_updates += 1
        if self.num_updates % config.target_update_interval == 0:
            update_target(self.target_network, self.q_network, config.tau)
        return float(loss.detach()), float(q_values.detach().mean())

    @torch.no_grad()
    def _targets(self, batch: Transitions) -> torch.Tensor:
        """TD targets; next-state values are computed only for the transitions that bootstrap.

        A terminal transition's target is its reward alone, so its next
        observation never goes through the networks (in a one-step task such
        as DigitsVQA, none does).
        """
        config = self.config
        discounts = bootstrap_discounts(batch.terminated, batch.horizons, config.gamma)
        targets = torch.tensor(batch.rewards, dtype=torch.float32, device=self.device)
        live = np.flatnonzero(discounts)
        if live.size == 0:
            return targets
        next_observations = batch.next_observations if live.size == len(discounts) \
            else take(batch.next_observations, live)
        next_q_online = self.q_network(next_observations) if config.double_dqn else None
        rows = torch.as_tensor(live, device=self.device)
        targets[rows] = td_targets(
            targets[rows],
            torch.as_tensor(discounts[live], dtype=torch.float32, device=self.device),
            self.target_network(next_observations),
            next_q_online,
        )
        return targets

    # --- acting ---------------------------------------------------------------------------------

    def _greedy(self, observations: Mapping[str, Any]) -> np.ndarray:
        training = self.q_network.training
        self._switch_mode(False)
        try:
            with torch.no_grad():
                q_values = self.q_network(observations)
        finally:
            self._switch_mode(training)
        return q_values.argmax(dim=1).cpu().numpy().astype(np.int64)

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

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Greedy actions, or epsilon-greedy at the current exploration rate when not ``deterministic``.

        Stochastic actions draw from their own generator, so evaluating never
        changes the training run.
        """
        self._require_setup()
        check_dict(observations)
        if deterministic:
            actions = self._greedy(observations)
        else:
            actions = self._epsilon_greedy(observations, self.epsilon, self._act_rng)
        return actions + self.action_start

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The Q-values ``(B, num_actions)``, differentiable (behaviour cloning fits them as logits)."""
        self._require_setup()
        return self.q_network(check_dict(observations))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self._require_setup()
        return list(self._trainable)

    # --- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Networks, Adam, the replay buffer's contents, pending n-step steps, counters and generators.

        The target network's entry leaves out the frozen encoders it shares with the online network.

        Like ``torch.nn.Module.state_dict``, tensors and arrays may share
        memory with the live optimizer: save or copy them before training on.
        """
        self._require_setup()
        return {
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "q_network": self.q_network.state_dict(),
            "target_network": own_state(self.target_network, self._shared_prefixes),
            "optimizer": self.adam.state_dict(),
            "replay": self.replay.state_dict(),
            "nstep": self.nstep.state_dict(),
            "observations": dict(self._observations),
            "counters": {
                "num_timesteps": self.num_timesteps,
                "num_updates": self.num_updates,
                "num_iterations": self.num_iterations,
            },
            "rng": {"explore": generator_state(self._explore_rng), "act": generator_state(self._act_rng)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` after :meth:`setup`.

        The environments keep the episodes ``setup`` started: environment
        state is not part of an optimizer's state. Steps still waiting for
        their n-step return when the state was saved belong to episodes that
        will not continue, so they are closed as truncated there (bootstrapping
        from the observation at save time) and added to the replay buffer.
        """
        self._require_setup()
        if state.get("format") != STATE_FORMAT:
            raise PolyfuseError(
                f"this dqn state has format {state.get('format')!r}; polyfuse-dqn "
                f"reads format {STATE_FORMAT}. Start a new run, or resume with the polyfuse-dqn that saved it"
            )
        self.q_network.load_state_dict(state["q_network"])
        load_own_state(self.target_network, state["target_network"], self._shared_prefixes)
        self.adam.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        counters = state["counters"]
        self.num_timesteps = int(counters["num_timesteps"])
        self.num_updates = int(counters["num_updates"])
        self.num_iterations = int(counters["num_iterations"])
        set_generator_state(self._explore_rng, state["rng"]["explore"])
        set_generator_state(self._act_rng, state["rng"]["act"])
        closed = self.nstep.close_saved(state["nstep"], state["observations"])
        if closed is not None:
            self.replay.add(closed)
        self._target_synced = True
