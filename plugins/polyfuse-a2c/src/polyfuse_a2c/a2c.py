"""Synchronous advantage actor-critic (Mnih et al. 2016, as Stable-Baselines3's A2C) and REINFORCE (Williams 1992).

Rollouts, reward scoring, GAE, the actor-critic and the learning-rate schedule
come from :class:`polyfuse.rl.on_policy.OnPolicyAlgorithm`. A2C's own part is
the update: one gradient step on the whole rollout, on
``-mean(A log pi(a|s)) - ent_coef * entropy + vf_coef * 0.5 * mean((V - R)^2)``,
with RMSprop (SB3's default) or Adam. ``returns: monte-carlo`` replaces the
bootstrapped returns by discounted reward sums to each episode's end
(REINFORCE), with the critic as a baseline or (``baseline: false``) not at all.
"""

from __future__ import annotations

import torch
from polyfuse.rl import distributions
from polyfuse.rl.advantages import compute_gae, explained_variance, normalize, value_loss
from polyfuse.rl.on_policy import OnPolicyAlgorithm, Rollout, sequence_minibatches
from polyfuse.training.api import Pipeline

from polyfuse_a2c.plugin import A2CConfig


def monte_carlo_returns(
    rewards: torch.Tensor, ends: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted reward sums to the episode's end for ``(T, N)`` steps, and which steps' episodes end in them.

    ``ends[t, i]``: env ``i``'s episode ended (terminated or truncated) with step
    ``t``. Returns ``(returns, complete)``; where ``complete`` is false the sum is
    cut by the rollout's end and is not a return.
    """
    zeros = torch.zeros_like(rewards)
    # GAE with zero values, lambda 1 and every end a termination is the discounted sum of rewards.
    returns, _ = compute_gae(rewards, zeros, ends, torch.zeros_like(ends), zeros[0], zeros, gamma, 1.0)
    complete = ends.int().flip(0).cummax(0).values.flip(0).bool()
    return returns, complete


class A2C(OnPolicyAlgorithm):
    """The ``a2c`` optimizer: see :class:`polyfuse_a2c.plugin.A2CConfig` for its params."""

    name = "a2c"
    state_format = 1
    config: A2CConfig

    def _build(self, pipeline: Pipeline) -> None:
        super()._build(pipeline)
        config = self.config
        if config.optimizer == "rmsprop":
            assert self.adam is not None
            self.adam = torch.optim.RMSprop(
                self.adam.param_groups[0]["params"], lr=config.learning_rate, alpha=config.rmsprop_alpha,
                eps=config.rmsprop_eps,
            )

    def _update(self, rollout: Rollout) -> dict[str, float]:
        loss, samples, metrics = self.loss(rollout)
        if loss is not None:
            self._descend(loss, samples)
        return metrics

    def _remembered(self, rollout: Rollout, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, values)`` of ``rows`` for a policy with memory: the whole rollout unrolled in its sequences."""
        order = sequence_minibatches(self.config.n_steps, self.envs.num_envs, self.config.sequence_length,
                                     rollout.size, None)[0]
        logits, values = self._forward_rows(rollout, order)
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order))
        return logits[position[rows]], values[position[rows]]

    def loss(self, rollout: Rollout) -> tuple[torch.Tensor | None, int, dict[str, float]]:
        """The loss of the gradient step on ``rollout``, its sample count and metrics (a loss of None: no step).

        ``returns: monte-carlo`` leaves out the steps of episodes still running
        at the rollout's end; with none ended, there is no step.
        """
        config, nvec = self.config, self.layout.nvec
        rows = torch.arange(rollout.size)
        advantages, returns = rollout.advantages, rollout.returns
        metrics: dict[str, float] = {}
        if config.returns == "monte-carlo":
            ends = rollout.terminated | rollout.truncated
            shape = (-1, self.envs.num_envs)
            returns, complete = monte_carlo_returns(rollout.rewards.reshape(shape), ends.reshape(shape), config.gamma)
            rows = torch.nonzero(complete.reshape(-1)).squeeze(-1)
            metrics["complete_fraction"] = len(rows) / rollout.size
            if not len(rows):
                return None, 0, metrics
            returns = returns.reshape(-1)[rows]
            advantages = returns - rollout.values[rows] if config.baseline else returns
        if self.model.memory is not None:
            logits, values = self._remembered(rollout, rows)
        elif config.baseline:
            logits, values = self.model(rollout.observations.take(rows.numpy()))
        else:
            logits = self.model.logits(rollout.observations.take(rows.numpy()))
        if config.normalize_advantage:
            advantages = normalize(advantages)
        policy_loss = -(advantages * distributions.log_prob(logits, rollout.actions[rows], nvec)).mean()
        entropy = distributions.entropy(logits, nvec).mean()
        loss = policy_loss - config.ent_coef * entropy
        metrics.update(policy_loss=policy_loss.item(), entropy=entropy.item())
        if config.baseline:
            fit = value_loss(values, returns)
            loss = loss + config.vf_coef * fit
            metrics.update(value_loss=fit.item(),
                           explained_variance=explained_variance(rollout.values[rows], returns))
        return loss, len(rows), metrics

