"""Proximal Policy Optimization (Schulman et al. 2017) on a polyfuse pipeline.

Each :meth:`PPO.iterate` collects a rollout of ``n_steps`` steps from every
vector env, computes GAE advantages (Schulman et al. 2016), and makes
``n_epochs`` passes of clipped-objective minibatch updates over it, with the
implementation details of Baselines/CleanRL (advantage normalisation, value
clipping, gradient clipping, learning-rate annealing, target-KL early stop).
For RLHF-style fine-tuning, ``kl_coef > 0`` adds a KL penalty towards a
frozen copy of the policy taken at the first iterate, i.e. after any
supervised warm start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch

from polyfuse.errors import PolyfuseError
from polyfuse.network import frozen_twin, load_own_state, own_state
from polyfuse.training.api import Pipeline, RLOptimizer
from polyfuse_ppo import functional as PF
from polyfuse_ppo.networks import (
    ActionLayout,
    ActorCritic,
    PolicyNetwork,
)
from polyfuse_ppo.observations import ObservationColumns, check_dict, stack
from polyfuse_ppo.plugin import PPOConfig

STATE_FORMAT = 1
"""Version of :meth:`PPO.state_dict`'s layout; bumped when it changes incompatibly."""


@dataclass
class Rollout:
    """One rollout, flattened to ``T * N`` samples (sample ``t * N + i`` is env ``i`` at step ``t``)."""

    observations: ObservationColumns
    actions: torch.Tensor  # (T*N, D) zero-based indices
    log_probs: torch.Tensor  # (T*N,)
    values: torch.Tensor  # (T*N,)
    advantages: torch.Tensor  # (T*N,)
    returns: torch.Tensor  # (T*N,)

    @property
    def size(self) -> int:
        return self.observations.size


def _seed(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1)[0])


class PPO(RLOptimizer):
    """The ``ppo`` optimizer: see :class:`polyfuse_ppo.plugin.PPOConfig` for its params."""

    def __init__(self, config: PPOConfig) -> None:
        self.config = config
        self._pipeline: Pipeline | None = None
        self._budget: int | None = None  # from set_total_steps()
        self.reference: PolicyNetwork | None = None

    # --- set-up ---------------------------------------------------------------------------------

    def set_total_steps(self, total_steps: int) -> None:
        """Tell the optimizer the run's step budget (``trainer.total_steps``), for ``lr_schedule: linear``.

        The config's ``total_steps``, when set, takes precedence. May be
        called before or after :meth:`setup`, and again on resume with a new
        budget (the schedule continues from the steps already taken).
        """
        if int(total_steps) <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self._budget = int(total_steps)

    def setup(self, pipeline: Pipeline) -> None:
        """Build the actor-critic and Adam; reset the environments.

        The environments are reset without a seed: seed them when building
        them (``polyfuse.envs.make_vector_env`` does), so that a resumed run,
        whose environments the trainer seeds anew, plays new episodes. The
        networks' initialisation and every random draw of the optimizer
        (action sampling, minibatch order) derive from ``pipeline.seed``,
        without touching torch's global generator.
        """
        config = self.config
        self.layout = ActionLayout.of(pipeline.action_space)
        self.envs = pipeline.envs
        self.num_envs = int(self.envs.num_envs)
        _check_autoreset(self.envs)
        self.device = torch.device(pipeline.device)
        torch_seed, rollout_seed, shuffle_seed, act_seed = np.random.SeedSequence(pipeline.seed).spawn(4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(torch_seed))
            self.model = ActorCritic(
                pipeline.make_network,
                self.layout,
                shared_trunk=config.shared_trunk,
                hidden_sizes=config.hidden_sizes,
                activation=config.activation,
                ortho_init=config.ortho_init,
            ).to(self.device)
        self._parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self._parameters, lr=config.learning_rate, eps=config.adam_eps, fused=True)
        self._rollout_rng = torch.Generator().manual_seed(_seed(rollout_seed))
        self._shuffle_rng = torch.Generator().manual_seed(_seed(shuffle_seed))
        self._act_rng = torch.Generator().manual_seed(_seed(act_seed))
        self.reference = None
        self._reference_prefixes: list[str] = []
        self.num_timesteps = 0  # transitions collected (env steps summed over the vector envs)
        self.num_updates = 0  # gradient steps
        self.num_iterations = 0
        self._pipeline = pipeline
        observations, _ = self.envs.reset()
        self._observations = check_dict(observations)

    def _require_setup(self) -> None:
        if self._pipeline is None:
            raise RuntimeError("call setup(pipeline) first")

    # --- training -------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int | None:
        """The step budget the linear schedule anneals over (config first, then set_total_steps())."""
        return self.config.total_steps if self.config.total_steps is not None else self._budget

    def current_learning_rate(self) -> float:
        """The learning rate of the next iterate: constant, or linear from learning_rate to 0."""
        config = self.config
        if config.lr_schedule == "constant":
            return config.learning_rate
        budget = self.total_steps
        if budget is None:
            raise PolyfuseError(
                "ppo: lr_schedule 'linear' needs the run's step budget: set the optimizer param total_steps "
                "(to trainer.total_steps), or use lr_schedule: constant"
            )
        return config.learning_rate * max(0.0, 1.0 - getattr(self, "num_timesteps", 0) / budget)

    def iterate(self) -> dict[str, float]:
        """Collect one rollout, then update on it; returns the update's metrics."""
        self._require_setup()
        if self.config.kl_coef > 0 and self.reference is None:
            self._take_reference()
        learning_rate = self.current_learning_rate()
        for group in self.adam.param_groups:
            group["lr"] = learning_rate
        rollout = self._collect()
        metrics = self._update(rollout)
        self.num_iterations += 1
        metrics["learning_rate"] = learning_rate
        return metrics

    def _take_reference(self) -> None:
        self.reference, self._reference_prefixes = frozen_twin(self.model.policy)

    @torch.no_grad()
    def _collect(self) -> Rollout:
        config, layout, device = self.config, self.layout, self.device
        steps, envs = config.n_steps, self.num_envs
        shape = (steps, envs)
        actions = torch.zeros((*shape, len(layout.nvec)), dtype=torch.long, device=device)
        log_probs = torch.zeros(shape, device=device)
        values = torch.zeros(shape, device=device)
        rewards = torch.zeros(shape, device=device)
        terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        final_values = torch.zeros(shape, device=device)
        batches: list[Mapping[str, Any]] = []
        observations = self._observations
        for t in range(steps):
            logits, value = self.model(observations)
            action = PF.sample(logits, layout.nvec, self._rollout_rng).to(device)
            batches.append({k: v.copy() if isinstance(v, np.ndarray) else v for k, v in observations.items()})
            actions[t] = action
            log_probs[t] = PF.log_prob(logits, action, layout.nvec)
            values[t] = value
            observations, reward, term, trunc, infos = self.envs.step(layout.to_env(action))
            observations = check_dict(observations)
            term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
            rewards[t] = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=device)
            terminated[t] = torch.as_tensor(term, device=device)
            truncated[t] = torch.as_tensor(trunc, device=device)
            cut = np.flatnonzero(trunc & ~term)
            if cut.size:
                final = stack([infos["final_obs"][i] for i in cut])
                final_values[t, torch.as_tensor(cut, device=device)] = self.model.value(final)
        self._observations = observations
        self.num_timesteps += steps * envs
        last_values = self.model.value(observations)
        advantages, returns = PF.compute_gae(
            rewards, values, terminated, truncated, last_values, final_values, config.gamma, config.gae_lambda
        )
        return Rollout(
            ObservationColumns(batches),
            actions.reshape(steps * envs, -1),
            log_probs.reshape(-1),
            values.reshape(-1),
            advantages.reshape(-1),
            returns.reshape(-1),
        )

    def _update(self, rollout: Rollout) -> dict[str, float]:
        config, nvec, device = self.config, self.layout.nvec, self.device
        sums: dict[str, float] = {}
        recorded = 0
        gradient_steps = 0
        stopped = False
        for _ in range(config.n_epochs):
            order = torch.randperm(rollout.size, generator=self._shuffle_rng)
            for indices in torch.split(order, config.batch_size):
                observations = rollout.observations.take(indices.numpy())
                index = indices.to(device)
                logits, values = self.model(observations)
                advantages = rollout.advantages[index]
                if config.normalize_advantage:
                    advantages = PF.normalize(advantages)
                policy_loss, stats = PF.clipped_policy_loss(
                    PF.log_prob(logits, rollout.actions[index], nvec), rollout.log_probs[index], advantages,
                    config.clip_range,
                )
                value_loss = PF.value_loss(values, rollout.values[index], rollout.returns[index], config.clip_range_vf)
                entropy = PF.entropy(logits, nvec).mean()
                loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss
                record = {
                    "policy_loss": policy_loss.item(),
                    "value_loss": value_loss.item(),
                    "entropy": entropy.item(),
                    "approx_kl": stats["approx_kl"].item(),
                    "clip_fraction": stats["clip_fraction"].item(),
                }
                if self.reference is not None:
                    with torch.no_grad():
                        reference_logits = self.reference(observations)
                    kl_to_reference = PF.kl_divergence(logits, reference_logits, nvec).mean()
                    loss = loss + config.kl_coef * kl_to_reference
                    record["kl_to_reference"] = kl_to_reference.item()
                for key, value in record.items():
                    sums[key] = sums.get(key, 0.0) + value
                recorded += 1
                if config.target_kl is not None and record["approx_kl"] > config.target_kl:
                    stopped = True
                    break
                self.adam.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self._parameters, config.max_grad_norm)
                self.adam.step()
                gradient_steps += 1
            if stopped:
                break
        self.num_updates += gradient_steps
        metrics = {key: total / recorded for key, total in sums.items()}
        metrics["explained_variance"] = PF.explained_variance(rollout.values, rollout.returns)
        metrics["gradient_steps"] = float(gradient_steps)
        metrics["early_stopped"] = float(stopped)
        return metrics

    # --- acting ---------------------------------------------------------------------------------

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """The most likely actions, or actions sampled from the policy when not ``deterministic``.

        Sampled actions draw from their own generator, so evaluating never
        changes the training run. Returns ``(B,)`` for a Discrete action
        space, ``(B, D)`` for MultiDiscrete, in the space's own values.
        """
        self._require_setup()
        with torch.no_grad():
            logits = self.model.logits(check_dict(observations))
        nvec = self.layout.nvec
        indices = PF.mode(logits, nvec) if deterministic else PF.sample(logits, nvec, self._act_rng)
        return self.layout.to_env(indices)

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """The policy's logits ``(B, n)``, differentiable; MultiDiscrete: each dimension's side by side."""
        self._require_setup()
        return self.model.logits(check_dict(observations))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's trainable parameters (trunk + policy head; a separate critic trunk is left out)."""
        self._require_setup()
        return [p for p in self.model.policy.parameters() if p.requires_grad]

    # --- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Networks, Adam, the reference policy, counters and generators.

        Like ``torch.nn.Module.state_dict``, tensors may share memory with the
        live optimizer: save or copy them before training on. The reference
        policy leaves out the frozen encoders it shares with the policy.
        """
        self._require_setup()
        return {
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "model": self.model.state_dict(),
            "optimizer": self.adam.state_dict(),
            "reference": None if self.reference is None else own_state(self.reference, self._reference_prefixes),
            "counters": {
                "num_timesteps": self.num_timesteps,
                "num_updates": self.num_updates,
                "num_iterations": self.num_iterations,
            },
            "total_steps": self._budget,
            # The observations the next rollout starts from, for inspection: a resumed run starts from the
            # observations of the environments it is set up with (environment state is not saved here).
            "observations": dict(self._observations),
            "rng": {
                "rollout": self._rollout_rng.get_state(),
                "shuffle": self._shuffle_rng.get_state(),
                "act": self._act_rng.get_state(),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` after :meth:`setup`.

        The environments keep the episodes ``setup`` started: environment
        state is not part of an optimizer's state. A budget given by
        :meth:`set_total_steps` before loading wins over the saved one.
        """
        self._require_setup()
        if state.get("format") != STATE_FORMAT:
            raise PolyfuseError(
                f"this ppo state has format {state.get('format')!r}; polyfuse-ppo reads format {STATE_FORMAT}. "
                "Start a new run, or resume with the polyfuse-ppo that saved it"
            )
        self.model.load_state_dict(state["model"])
        self.adam.load_state_dict(state["optimizer"])
        counters = state["counters"]
        self.num_timesteps = int(counters["num_timesteps"])
        self.num_updates = int(counters["num_updates"])
        self.num_iterations = int(counters["num_iterations"])
        if self._budget is None and state.get("total_steps") is not None:
            self._budget = int(state["total_steps"])
        rng = state["rng"]
        self._rollout_rng.set_state(_byte_tensor(rng["rollout"]))
        self._shuffle_rng.set_state(_byte_tensor(rng["shuffle"]))
        self._act_rng.set_state(_byte_tensor(rng["act"]))
        self.reference = None
        if state.get("reference") is not None:
            reference, prefixes = frozen_twin(self.model.policy)
            load_own_state(reference, state["reference"], prefixes)
            self.reference, self._reference_prefixes = reference, prefixes


def _byte_tensor(value: Any) -> torch.Tensor:
    """A generator state as ``set_state`` takes it (checkpoints may hand back a numpy array)."""
    return torch.as_tensor(np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value), dtype=torch.uint8)


def _check_autoreset(envs: Any) -> None:
    """Refuse vector envs that autoreset on the next step: their rollouts would mix episodes silently."""
    metadata = getattr(getattr(envs, "envs", envs), "metadata", None) or {}
    mode = metadata.get("autoreset_mode")
    if mode is None:
        return
    value = getattr(mode, "value", mode)
    if value != gymnasium.vector.AutoresetMode.SAME_STEP.value:
        raise PolyfuseError(
            f"ppo needs vector envs with autoreset_mode=SAME_STEP (final observations in infos['final_obs']); "
            f"these use {value}"
        )
