"""On-policy actor-critics (PPO, A2C): collect a rollout with the current policy, learn from it, discard it.

Each ``iterate`` collects ``n_steps`` steps from every vector env, scores the
whole rollout with the pipeline's reward source in one call (so a reward
model that learns is read once per rollout, never stale), computes GAE
advantages (Schulman et al. 2016) and hands the rollout to the subclass's
:meth:`OnPolicyAlgorithm._update`. With ``env.vectorization: pipelined`` or
``ray`` the rollout comes from env runners (worker processes, Ray actors) that
acted with the policy one update old (:mod:`polyfuse.sampling`); scoring and
GAE are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from polyfuse.errors import PolyfuseError
from polyfuse.observations import ObservationColumns, check_dict, copy_batch, stack
from polyfuse.rewards import RewardBatch
from polyfuse.rl import distributions
from polyfuse.rl.advantages import compute_gae
from polyfuse.rl.base import Algorithm, GeneratorKind
from polyfuse.rl.configs import OnPolicyConfig
from polyfuse.rl.distributions import ActionLayout
from polyfuse.rl.heads import ActorCritic
from polyfuse.sampling import Sampler
from polyfuse.training.api import Pipeline


@dataclass
class Rollout:
    """One rollout, flattened to ``T * N`` samples (sample ``t * N + i`` is env ``i`` at step ``t``).

    ``actions`` are zero-based indices ``(T*N, D)`` (see
    :mod:`polyfuse.rl.distributions`); ``rewards`` are the reward source's;
    ``terminated``/``truncated`` say whether each step ended its episode.
    A policy with memory also has ``memory`` ``(T*N, size)``, the state each
    step was taken from, and ``starts`` ``(T*N,)``, whether it began an episode.
    """

    observations: ObservationColumns
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    memory: torch.Tensor | None = None
    starts: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.observations.size


@dataclass
class CollectedSteps:
    """``T`` steps of ``N`` envs as the behaviour policy took them, before scoring and GAE.

    ``actions`` ``(T, N, D)``; ``log_probs``, ``values``, ``final_values`` (V of
    the final observation where a step truncated its episode) ``(T, N)``;
    ``last_values`` ``(N,)``: V after the last step; ``env_rewards``,
    ``terminated``, ``truncated``: ``(T, N)`` arrays; ``env_actions``: the
    ``T * N`` actions in the environment's values; ``observations``: row ``t * N + i``;
    ``memory`` ``(T, N, size)`` and ``starts`` ``(T, N)``: see :class:`Rollout` (None from env runners).
    """

    observations: ObservationColumns
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    final_values: torch.Tensor
    last_values: torch.Tensor
    env_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    env_actions: np.ndarray
    memory: torch.Tensor | None = None
    starts: torch.Tensor | None = None


class OnPolicyAlgorithm(Algorithm):
    """Rollouts, GAE, an actor-critic (``self.model``) and Adam (``self.adam``); a subclass writes the update.

    A subclass sets ``name`` (and ``state_format``), implements
    :meth:`_update` (the rollout in, scalar metrics out; each gradient step
    through :meth:`Algorithm._descend`, which counts progress) and may add
    state entries and random streams (listing ``rollout`` and ``act`` too,
    in the order its seeds should be drawn). Its config subclasses
    :class:`~polyfuse.rl.configs.OnPolicyConfig`.

    The environments are reset without a seed: seed them when building them
    (``polyfuse.envs.make_vector_env`` does). A resumed run continues the
    saved episodes when the trainer could restore the environments, else
    plays new ones from environments seeded anew.
    """

    config: OnPolicyConfig
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"rollout": "torch", "act": "torch"}

    def _build(self, pipeline: Pipeline) -> None:
        config = self.config
        self.layout = ActionLayout.of(pipeline.action_space, self.name)
        self.model = ActorCritic(
            pipeline.make_network,
            self.layout.num_logits,
            shared_trunk=config.shared_trunk,
            hidden_sizes=config.hidden_sizes,
            activation=config.activation,
            ortho_init=config.ortho_init,
            memory=config.memory,
        )
        self._acting_memory: torch.Tensor | None = None
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(parameters, lr=config.learning_rate, eps=config.adam_eps, fused=True)

    def setup(self, pipeline: Pipeline) -> None:
        """Build the actor-critic and Adam; reset the environments (or hand the actor-critic to the sampler's workers)."""
        super().setup(pipeline)
        self.envs = pipeline.envs
        self.sampler = pipeline.envs if isinstance(pipeline.envs, Sampler) else None
        if self.sampler is not None:
            self.sampler.attach(self.model, self.layout, self.config, self.rng["rollout"])
            return
        observations, _ = self.envs.reset()
        self._observations = check_dict(observations, self.name)
        self._forget_rollout_memory()

    def _forget_rollout_memory(self) -> None:
        """Every env at the start of an episode, with nothing remembered."""
        self._memory = self.model.initial_state(self.envs.num_envs)
        self._starts = torch.ones(self.envs.num_envs, dtype=torch.bool)

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        super()._check_pipeline(pipeline)
        if self.config.memory and isinstance(pipeline.envs, Sampler):
            raise PolyfuseError(
                f"optimizer.params.memory: {self.name}'s env runners (env.vectorization: pipelined or ray) act without "
                "the learner's memory state; use env.vectorization: sync or async with a memory, or memory: 0"
            )

    # --- learning ---------------------------------------------------------------------------------

    def current_learning_rate(self) -> float:
        """The learning rate of the next iterate: constant, or linear from learning_rate to 0 over the budget."""
        config = self.config
        if config.lr_schedule == "constant":
            return config.learning_rate
        budget = self._require_budget("lr_schedule 'linear'", "set optimizer.params.lr_schedule: constant")
        return config.learning_rate * (1.0 - budget.fraction(self.progress))

    def _iterate(self) -> dict[str, float]:
        """Collect one rollout, then update on it; returns the update's metrics and the learning rate."""
        learning_rate = self.current_learning_rate()
        assert self.adam is not None
        for group in self.adam.param_groups:
            group["lr"] = learning_rate
        metrics = self._update(self._collect())
        metrics["learning_rate"] = learning_rate
        if self.sampler is not None:
            metrics.update(self.sampler.metrics())
        return metrics

    def _update(self, rollout: Rollout) -> dict[str, float]:
        """Learn from ``rollout``; returns scalar metrics (losses, entropy, …)."""
        raise NotImplementedError

    @torch.no_grad()
    def _collect(self) -> Rollout:
        """A rollout from the environments stepped here, or from the sampler's env runners."""
        if self.sampler is not None:
            return self._rollout(self.sampler.collect(self.model, self.config.n_steps))
        steps, envs, nvec = self.config.n_steps, self.envs.num_envs, self.layout.nvec
        shape = (steps, envs)
        actions = torch.zeros((*shape, len(nvec)), dtype=torch.long)
        log_probs = torch.zeros(shape)
        values = torch.zeros(shape)
        final_values = torch.zeros(shape)
        env_rewards = np.zeros(shape, dtype=np.float32)
        terminated = np.zeros(shape, dtype=bool)
        truncated = np.zeros(shape, dtype=bool)
        memory = torch.zeros((*shape, self._memory.shape[1]))
        starts = torch.zeros(shape, dtype=torch.bool)
        batches: list[Mapping[str, Any]] = []
        env_actions: list[np.ndarray] = []
        observations = self._observations
        for t in range(steps):
            memory[t], starts[t] = self._memory, self._starts
            logits, value, self._memory = self.model.step(observations, self._memory, self._starts)
            action = distributions.sample(logits, nvec, self.rng["rollout"])
            batches.append(copy_batch(observations))
            actions[t] = action
            log_probs[t] = distributions.log_prob(logits, action, nvec)
            values[t] = value
            env_actions.append(self.layout.to_env(action))
            observations, env_rewards[t], terminated[t], truncated[t], infos = self.envs.step(env_actions[-1])
            self._starts = torch.from_numpy(terminated[t] | truncated[t])
            cut = np.flatnonzero(truncated[t] & ~terminated[t])
            if cut.size:
                final = stack([infos["final_obs"][i] for i in cut])
                rows = torch.as_tensor(cut)
                final_values[t, rows] = self._value(final, self._memory[rows], torch.zeros(len(cut), dtype=torch.bool))
        self._observations = observations
        return self._rollout(CollectedSteps(
            ObservationColumns.of_batches(batches), actions, log_probs, values, final_values,
            self._value(observations, self._memory, self._starts), env_rewards, terminated, truncated,
            np.concatenate(env_actions), memory, starts,
        ))

    def _value(self, observations: Mapping[str, Any], memory: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """V of ``observations``, each continuing the episode whose memory state is ``memory`` (unless it starts one)."""
        if self.model.memory is None:
            return self.model.value(observations)
        return self.model.step(observations, memory, starts)[1]

    def _forward_rows(self, rollout: Rollout, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)`` of the rollout's ``rows``: any rows without a memory; with one, whole sequences
        from :func:`sequence_minibatches` (time-major), each unrolled from the memory it was collected with."""
        observations = rollout.observations.take(rows.numpy())
        if self.model.memory is None:
            return self.model(observations)
        assert rollout.memory is not None and rollout.starts is not None
        count = len(rows) // self.config.sequence_length
        starts = rollout.starts[rows].reshape(self.config.sequence_length, count)
        return self.model.unroll(observations, rollout.memory[rows[:count]], starts)

    def _rollout(self, collected: CollectedSteps) -> Rollout:
        """Score the collected steps with the reward source and compute GAE on the values they were taken with."""
        steps, envs = collected.log_probs.shape
        shape = (steps, envs)
        self._count_env_steps(steps * envs)
        terminated, truncated = collected.terminated, collected.truncated
        rewards = torch.from_numpy(self._score(RewardBatch(
            collected.observations.all(), collected.env_actions, collected.env_rewards.reshape(-1),
            terminated.reshape(-1), truncated.reshape(-1),
        ))).reshape(shape)
        advantages, returns = compute_gae(
            rewards, collected.values, torch.from_numpy(terminated), torch.from_numpy(truncated),
            collected.last_values, collected.final_values, self.config.gamma, self.config.gae_lambda,
        )
        memory, starts = collected.memory, collected.starts
        return Rollout(
            collected.observations,
            collected.actions.reshape(steps * envs, -1),
            collected.log_probs.reshape(-1),
            collected.values.reshape(-1),
            rewards.reshape(-1),
            advantages.reshape(-1),
            returns.reshape(-1),
            torch.from_numpy(terminated.reshape(-1)),
            torch.from_numpy(truncated.reshape(-1)),
            None if memory is None else memory.reshape(steps * envs, -1),
            None if starts is None else starts.reshape(-1),
        )

    # --- acting -----------------------------------------------------------------------------------

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """The most likely actions, or actions sampled from the policy when not ``deterministic``.

        Sampled actions draw from their own generator, so evaluating never
        changes the training run. Returns ``(B,)`` for a Discrete action
        space, ``(B, D)`` for MultiDiscrete, in the space's own values.

        With a memory, each call continues the episodes of the previous one
        (row by row) from the state :meth:`reset_memory` started; a batch of
        another size starts new episodes.
        """
        self._require_setup()
        observations = check_dict(observations, self.name)
        with torch.no_grad():
            if self.model.memory is None:
                logits = self.model.logits(observations)
            else:
                rows = len(next(iter(observations.values())))
                if self._acting_memory is None or len(self._acting_memory) != rows:
                    self.reset_memory(rows)
                assert self._acting_memory is not None
                logits, self._acting_memory = self.step_logits(observations, self._acting_memory)
        nvec = self.layout.nvec
        indices = distributions.mode(logits, nvec) if deterministic else \
            distributions.sample(logits, nvec, self.rng["act"])
        return self.layout.to_env(indices)

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The policy's logits ``(B, n)``, differentiable; MultiDiscrete: each dimension's side by side.

        A policy with memory refuses: its logits depend on the episode so far (see :meth:`sequence_logits`).
        """
        self._require_setup()
        return self.model.logits(check_dict(observations, self.name))

    @property
    def memory_size(self) -> int:
        return self.config.memory

    def reset_memory(self, batch: int) -> None:
        self._require_setup()
        self._acting_memory = self.model.initial_state(batch)

    def step_logits(self, observations: Mapping[str, Any], memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_setup()
        if self.model.memory is None:
            raise NotImplementedError(f"{self.name} has no memory (optimizer.params.memory: 0): use action_logits")
        starts = torch.zeros_like(memory[:, 0], dtype=torch.bool)  # not len(memory): export traces other batch sizes
        return self.model.policy.step(check_dict(observations, self.name), memory, starts)

    def sequence_logits(self, observations: Mapping[str, Any], starts: torch.Tensor) -> torch.Tensor:
        self._require_setup()
        initial = self.model.initial_state(starts.shape[1])
        return self.model.policy.unroll(check_dict(observations, self.name), initial, starts)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's trainable parameters (trunk + policy head; a separate critic trunk is left out)."""
        self._require_setup()
        return [p for p in self.model.policy.parameters() if p.requires_grad]

    def load_policy(self, weights: Mapping[str, torch.Tensor]) -> None:
        """The actor's weights; the critic stays fresh (it estimated returns of the reward the policy was
        trained on, and a continued run learns from a new one)."""
        self._require_setup()
        self.model.policy.load_state_dict(weights)

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Besides :meth:`Algorithm.state_dict`'s: the actor-critic.

        Environment state is not saved here: a resumed run acts on the
        environments' restored observations when the trainer could restore
        them (``envs.restored``), else on those of the environments it is set up with.
        """
        state = {**super().state_dict(), "model": self.model.state_dict()}
        if self.sampler is None and self.config.memory:
            state["rollout_memory"] = {"state": self._memory, "starts": self._starts}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the running episodes' memory comes back with the environments."""
        super().load_state_dict(state)
        self.model.load_state_dict(state["model"])
        if self.sampler is None and getattr(self.envs, "restored", False):
            self._observations = check_dict(self.envs.observations, self.name)
            if "rollout_memory" in state:
                self._memory = torch.as_tensor(state["rollout_memory"]["state"]).clone()
                self._starts = torch.as_tensor(state["rollout_memory"]["starts"]).clone()


def sequence_minibatches(
    steps: int, envs: int, length: int, batch_size: int, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """A rollout of ``steps`` x ``envs`` cut into sequences of ``length`` steps of one env, shuffled (unless
    ``generator`` is None), grouped ``batch_size // length`` (at least one) to a minibatch; each minibatch is its
    rollout rows, time-major (row ``j * C + c`` is step ``j`` of sequence ``c``), as
    :meth:`OnPolicyAlgorithm._forward_rows` reads them."""
    count = (steps // length) * envs
    order = torch.arange(count) if generator is None else torch.randperm(count, generator=generator)
    offsets = torch.arange(length).unsqueeze(1)
    return [
        ((group // envs * length + offsets) * envs + group % envs).reshape(-1)
        for group in torch.split(order, max(1, batch_size // length))
    ]
