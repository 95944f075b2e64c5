"""The update against hand computations: returns, loss values, gradients and the direction of one step.

The policy's and the critic's output layers are zeroed, so every state has
uniform action probabilities (log pi = -ln 2, entropy ln 2) and the value of
the critic's output bias.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.observations import ObservationColumns
from polyfuse.rl.on_policy import Rollout
from polyfuse_a2c.a2c import A2C, monte_carlo_returns
from polyfuse_a2c.plugin import A2CConfig

LN2 = math.log(2)


def test_monte_carlo_returns_sum_discounted_rewards_to_the_episode_end() -> None:
    rewards = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    ends = torch.tensor([[False, True], [True, False], [False, True]])
    returns, complete = monte_carlo_returns(rewards, ends, gamma=0.5)
    # env 0: an episode of steps 0-1 (1 + 0.5 * 0), then one still running; env 1: steps 0, then 1-2 (2 + 0.5 * 1)
    torch.testing.assert_close(returns[:, 1], torch.tensor([0.0, 2.5, 1.0]))
    torch.testing.assert_close(returns[:2, 0], torch.tensor([1.0, 0.0]))
    assert complete.tolist() == [[True, True], [True, True], [False, True]]


def a2c_with_flat_heads(make_pipeline: Any, value: float = 0.0, **params: Any) -> A2C:
    a2c = A2C(A2CConfig(**{"hidden_sizes": [8], **params}))
    a2c.setup(make_pipeline("bandit", num_envs=2))
    with torch.no_grad():
        for layer in (a2c.model.policy.head[-1], a2c.model.value_head[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        a2c.model.value_head[-1].bias.fill_(value)
    return a2c


def rollout(rewards: list[float], advantages: list[float], returns: list[float], values: float = 0.0,
            actions: list[int] | None = None, ends: torch.Tensor | None = None) -> Rollout:
    """A rollout of one state (``go left``, vector 0) repeated: T = len / 2 steps of N = 2 envs.

    ``ends``: the steps that end their episode (terminated), none by default.
    """
    size = len(rewards)
    terminated = torch.zeros(size, dtype=torch.bool) if ends is None else ends
    observations = ObservationColumns({"vector": np.zeros((size, 4), np.float32), "text": ("go left",) * size})
    actions = actions or [0, 1] * (size // 2)
    return Rollout(observations, torch.tensor(actions).reshape(-1, 1), torch.full((size,), -LN2),
                   torch.full((size,), values), torch.tensor(rewards), torch.tensor(advantages), torch.tensor(returns),
                   terminated, torch.zeros(size, dtype=torch.bool))


def bias_gradients(a2c: A2C, loss: torch.Tensor) -> tuple[list[float], float | None]:
    loss.backward()
    policy, value = a2c.model.policy.head[-1].bias.grad, a2c.model.value_head[-1].bias.grad
    return policy.tolist(), None if value is None else value.item()


GAE = {"rewards": [0.0] * 4, "advantages": [2.0, -1.0, 0.5, 1.5], "returns": [1.0, 0.0, 2.0, -1.0],
           "actions": [0, 1, 0, 0]}


def test_a2c_loss_and_gradient(make_pipeline: Any) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, ent_coef=0.1, vf_coef=0.5)
    loss, samples, metrics = a2c.loss(rollout(**GAE))
    assert samples == 4
    # -mean(A log 1/2) = mean(A) ln 2; entropy ln 2; 0.5 * mean(R^2) with V = 0
    assert metrics["policy_loss"] == pytest.approx(0.75 * LN2)
    assert metrics["entropy"] == pytest.approx(LN2)
    assert metrics["value_loss"] == pytest.approx(0.75)
    assert loss.item() == pytest.approx(0.75 * LN2 - 0.1 * LN2 + 0.5 * 0.75)
    # d/dlogit_k of -mean(A log pi(a)) = -mean(A (1[a = k] - 1/2)); the entropy is flat at uniform;
    # d/dV of 0.5 * vf_coef * mean((V - R)^2) = vf_coef * mean(V - R)
    policy, value = bias_gradients(a2c, loss)
    assert policy == pytest.approx([-0.625, 0.625])
    assert value == pytest.approx(0.5 * -0.5)


def test_normalized_advantages_centre_the_policy_loss(make_pipeline: Any) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, normalize_advantage=True)
    _, _, metrics = a2c.loss(rollout(**GAE))
    assert metrics["policy_loss"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_one_step_makes_advantaged_actions_likelier_and_values_closer(make_pipeline: Any, optimizer: str) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, optimizer=optimizer, learning_rate=1e-3)
    assert type(a2c.adam).__name__ == {"rmsprop": "RMSprop", "adam": "Adam"}[optimizer]
    a2c._update(rollout(**GAE))
    observation = {"vector": np.zeros((1, 4), np.float32), "text": ("go left",)}
    probabilities = torch.softmax(a2c.action_logits(observation), -1)[0]
    assert probabilities[0] > 0.5 > probabilities[1]  # action 0 had the larger advantages
    assert 0 < a2c.model.value(observation).item() < 0.5  # towards mean(R) = 0.5
    assert (a2c.gradient_steps, a2c.samples) == (1, 4)


# Two envs, three steps, rows t * 2 + i: env 0 ends at step 1 and then runs on; env 1 ends at steps 0 and 2.
MC = {"rewards": [1.0, 0.0, 0.0, 2.0, 3.0, 1.0], "advantages": [9.0] * 6, "returns": [9.0] * 6}
MC_ENDS = torch.tensor([False, True, True, False, False, True])
MC_RETURNS = [1.0, 0.0, 0.0, 2.5, 1.0]  # gamma 0.5; row 4 (env 0, step 2) is cut by the rollout's end


def test_reinforce_with_baseline(make_pipeline: Any) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, value=0.5, returns="monte-carlo", gamma=0.5)
    loss, samples, metrics = a2c.loss(rollout(**MC, values=0.5, ends=MC_ENDS))
    assert samples == 5 and metrics["complete_fraction"] == pytest.approx(5 / 6)
    advantages = np.array(MC_RETURNS) - 0.5  # the rollout's own advantages and returns are not read
    assert metrics["policy_loss"] == pytest.approx(advantages.mean() * LN2)
    assert metrics["value_loss"] == pytest.approx(0.5 * np.mean(advantages**2))
    _policy, value = bias_gradients(a2c, loss)
    assert value == pytest.approx(0.5 * -advantages.mean())


def test_reinforce_without_baseline_neither_uses_nor_trains_the_critic(make_pipeline: Any) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, value=100.0, returns="monte-carlo", baseline=False, gamma=0.5)
    loss, samples, metrics = a2c.loss(rollout(**MC, values=100.0, ends=MC_ENDS))
    assert samples == 5 and set(metrics) == {"complete_fraction", "policy_loss", "entropy"}
    assert metrics["policy_loss"] == pytest.approx(np.mean(MC_RETURNS) * LN2)
    policy, value = bias_gradients(a2c, loss)
    assert value is None
    assert policy[0] == pytest.approx(-np.dot(MC_RETURNS, [0.5, -0.5, 0.5, -0.5, -0.5]) / 5)


def test_a_rollout_without_an_episode_end_makes_no_step(make_pipeline: Any) -> None:
    a2c = a2c_with_flat_heads(make_pipeline, returns="monte-carlo")
    assert a2c.loss(rollout(**MC)) == (None, 0, {"complete_fraction": 0.0})
