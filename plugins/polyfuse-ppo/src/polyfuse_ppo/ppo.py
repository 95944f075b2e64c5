"""Proximal Policy Optimization (Schulman et al. 2017) on a polyfuse pipeline.

Rollouts, reward scoring, GAE, the actor-critic and the learning-rate schedule
come from :class:`polyfuse.rl.on_policy.OnPolicyAlgorithm`. PPO's own part is
the update: ``n_epochs`` passes of clipped-objective minibatch updates over
each rollout, with the implementation details of Baselines/CleanRL
(advantage normalisation, value clipping, target-KL early stop). A rollout
collected one update late by pipelined or Ray env runners is corrected as
decoupled PPO (Hilton, Cobbe, Schulman 2021) by default: ``lag_correction``. For
RLHF-style fine-tuning, ``kl_coef > 0`` adds a KL penalty towards a frozen
copy of the policy taken at the first iterate, i.e. after any supervised
warm start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from polyfuse.network import frozen_twin, load_own_state, own_state
from polyfuse.rl import distributions
from polyfuse.rl.advantages import explained_variance, normalize, value_loss
from polyfuse.rl.base import GeneratorKind
from polyfuse.rl.heads import PolicyNetwork
from polyfuse.rl.on_policy import OnPolicyAlgorithm, Rollout, sequence_minibatches
from polyfuse.training.distributed import mean_over_ranks

from polyfuse_ppo.losses import behaviour_weights, clipped_policy_loss, decoupled_policy_loss
from polyfuse_ppo.plugin import PPOConfig


class PPO(OnPolicyAlgorithm):
    """The ``ppo`` optimizer: see :class:`polyfuse_ppo.plugin.PPOConfig` for its params."""

    name = "ppo"
    state_format = 2
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"rollout": "torch", "shuffle": "torch", "act": "torch"}
    config: PPOConfig

    def __init__(self, config: PPOConfig) -> None:
        super().__init__(config)
        self.reference: PolicyNetwork | None = None
        self._reference_prefixes: list[str] = []
        self._reference_memory: torch.Tensor | None = None

    def _start(self) -> None:
        if self.config.kl_coef > 0:
            self._take_reference()

    def _take_reference(self) -> None:
        """The policy as it is now, frozen (sharing its frozen encoders), as the KL penalty's reference; with a
        memory, the reference starts with the running episodes' memories (what it remembers, being the policy)."""
        self.reference, self._reference_prefixes = frozen_twin(self.model.policy)
        self._reference_memory = None if self.model.memory is None else self._memory.clone()

    @torch.no_grad()
    def _reference_logits(self, rollout: Rollout) -> torch.Tensor:
        """The reference's logits of every rollout row, stepping its own memory along each env's episodes (it
        carries over to the next rollout, as the policy's does)."""
        assert self.reference is not None and self._reference_memory is not None and rollout.starts is not None
        envs = self.envs.num_envs
        memory, chunks = self._reference_memory, []
        for first in range(0, rollout.size, envs):
            rows = np.arange(first, first + envs)
            logits, memory = self.reference.step(rollout.observations.take(rows), memory,
                                                 rollout.starts[first:first + envs])
            chunks.append(logits)
        self._reference_memory = memory
        return torch.cat(chunks)

    def _update(self, rollout: Rollout) -> dict[str, float]:
        config, nvec = self.config, self.layout.nvec
        sums: dict[str, float] = {}
        recorded = 0
        steps_before = self.gradient_steps
        stopped = False
        proximal = self._proximal_log_probs(rollout)
        remembered = None if self.reference is None or self.model.memory is None else self._reference_logits(rollout)
        weights = None if proximal is None else \
            behaviour_weights(proximal, rollout.log_probs, config.behaviour_weight_cap)
        for _ in range(config.n_epochs):
            for indices in self._minibatches(rollout):
                logits, values = self._forward_rows(rollout, indices)
                advantages = rollout.advantages[indices]
                if config.normalize_advantage:
                    advantages = normalize(advantages)
                new_log_probs = distributions.log_prob(logits, rollout.actions[indices], nvec)
                if proximal is None:
                    policy_loss, stats = clipped_policy_loss(
                        new_log_probs, rollout.log_probs[indices], advantages, config.clip_range)
                else:
                    assert weights is not None
                    policy_loss, stats = decoupled_policy_loss(
                        new_log_probs, proximal[indices], weights[indices], advantages, config.clip_range)
                fit = value_loss(values, rollout.returns[indices], rollout.values[indices], config.clip_range_vf)
                entropy = distributions.entropy(logits, nvec).mean()
                loss = policy_loss - config.ent_coef * entropy + config.vf_coef * fit
                record = {
                    "policy_loss": policy_loss.item(),
                    "value_loss": fit.item(),
                    "entropy": entropy.item(),
                    "approx_kl": stats["approx_kl"].item(),
                    "clip_fraction": stats["clip_fraction"].item(),
                }
                if self.reference is not None:
                    if remembered is not None:
                        reference_logits = remembered[indices]
                    else:
                        with torch.no_grad():
                            reference_logits = self.reference(rollout.observations.take(indices.numpy()))
                    kl_to_reference = distributions.kl_divergence(logits, reference_logits, nvec).mean()
                    loss = loss + config.kl_coef * kl_to_reference
                    record["kl_to_reference"] = kl_to_reference.item()
                for key, value in record.items():
                    sums[key] = sums.get(key, 0.0) + value
                recorded += 1
                # every rank stops alike: on the ranks' mean KL (this rank's alone in a single process)
                if config.target_kl is not None and mean_over_ranks(record["approx_kl"]) > config.target_kl:
                    stopped = True
                    break
                self._descend(loss, len(indices))
            if stopped:
                break
        metrics = {key: total / recorded for key, total in sums.items()}
        metrics["explained_variance"] = explained_variance(rollout.values, rollout.returns)
        metrics["gradient_steps"] = float(self.gradient_steps - steps_before)
        metrics["early_stopped"] = float(stopped)
        if weights is not None:
            metrics["behaviour_weight"] = weights.mean().item()
            metrics["behaviour_weight_max"] = weights.max().item()
        return metrics

    def _minibatches(self, rollout: Rollout) -> list[torch.Tensor]:
        """One epoch's shuffled minibatches of rollout rows: any rows, or whole sequences for a policy with memory."""
        if self.model.memory is None:
            return list(torch.split(torch.randperm(rollout.size, generator=self.rng["shuffle"]), self.config.batch_size))
        return sequence_minibatches(self.config.n_steps, self.envs.num_envs, self.config.sequence_length,
                                    self.config.batch_size, self.rng["shuffle"])

    @torch.no_grad()
    def _proximal_log_probs(self, rollout: Rollout) -> torch.Tensor | None:
        """The learner's log-probabilities of the rollout's actions before this update (decoupled PPO's proximal policy).

        None when there is nothing to decouple: ``lag_correction: ratio``, or a
        rollout collected with the weights as they are now (sync, async, a
        sampler's first rollout), so on-policy runs stay exactly as plain PPO.
        """
        if self.config.lag_correction == "ratio" or self.sampler is None or self.sampler.lag == 0:
            return None
        chunks = []
        for indices in torch.split(torch.arange(rollout.size), self.config.batch_size):
            logits = self.model.logits(rollout.observations.take(indices.numpy()))
            chunks.append(distributions.log_prob(logits, rollout.actions[indices], self.layout.nvec))
        return torch.cat(chunks)

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Besides :meth:`OnPolicyAlgorithm.state_dict`'s: the reference policy, without the frozen encoders it shares."""
        reference = None if self.reference is None else own_state(self.reference, self._reference_prefixes)
        state = {**super().state_dict(), "reference": reference}
        if self._reference_memory is not None:
            state["reference_memory"] = self._reference_memory
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` after :meth:`setup`; without a saved reference, ``kl_coef > 0`` takes one now."""
        super().load_state_dict(state)
        self.reference = None
        if state["reference"] is not None:
            self._take_reference()
            assert self.reference is not None
            load_own_state(self.reference, state["reference"], self._reference_prefixes)
            if getattr(self.envs, "restored", False) and state.get("reference_memory") is not None:
                self._reference_memory = torch.as_tensor(state["reference_memory"]).clone()
        elif self.config.kl_coef > 0:
            self._take_reference()
