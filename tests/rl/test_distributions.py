"""Categorical distributions over (multi-)discrete actions against torch.distributions, and action layouts."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.rl import distributions
from polyfuse.rl.distributions import ActionLayout
from torch.distributions import Categorical, kl_divergence


def test_categorical_helpers_match_torch_distributions_for_multi_discrete() -> None:
    generator = torch.Generator().manual_seed(0)
    nvec = (3, 2)
    logits = torch.randn(5, 5, generator=generator)
    q_logits = torch.randn(5, 5, generator=generator)
    actions = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1], [0, 0]])
    first, second = Categorical(logits=logits[:, :3]), Categorical(logits=logits[:, 3:])
    q_first, q_second = Categorical(logits=q_logits[:, :3]), Categorical(logits=q_logits[:, 3:])

    torch.testing.assert_close(
        distributions.log_prob(logits, actions, nvec), first.log_prob(actions[:, 0]) + second.log_prob(actions[:, 1])
    )
    torch.testing.assert_close(distributions.entropy(logits, nvec), first.entropy() + second.entropy())
    torch.testing.assert_close(
        distributions.kl_divergence(logits, q_logits, nvec), kl_divergence(first, q_first) + kl_divergence(second, q_second)
    )
    assert torch.equal(distributions.mode(logits, nvec), torch.stack([logits[:, :3].argmax(1), logits[:, 3:].argmax(1)], 1))
    with pytest.raises(ValueError, match="expected 5 logits"):
        distributions.log_prob(logits[:, :4], actions, nvec)


def test_kl_is_zero_for_identical_policies_and_known_for_a_coin() -> None:
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1]]).log()
    assert distributions.kl_divergence(p, p, (2,)).item() == pytest.approx(0.0, abs=1e-7)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert distributions.kl_divergence(p, q, (2,)).item() == pytest.approx(expected, rel=1e-5)


def test_sampling_follows_the_generator_and_the_probabilities() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0]]).expand(4000, 3)
    first = distributions.sample(logits, (3,), torch.Generator().manual_seed(7))
    again = distributions.sample(logits, (3,), torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    frequencies = torch.bincount(first[:, 0], minlength=3).float() / 4000
    torch.testing.assert_close(frequencies, torch.softmax(logits[0], 0), atol=0.03, rtol=0)



def test_action_layouts_map_indices_to_the_spaces_values() -> None:
    discrete = ActionLayout.of(gym.spaces.Discrete(3, start=5), "algo")
    assert (discrete.nvec, discrete.num_logits) == ((3,), 3)
    assert discrete.to_env(torch.tensor([[0], [2]])).tolist() == [5, 7]
    multi = ActionLayout.of(gym.spaces.MultiDiscrete([3, 2], start=[1, 0]), "algo")
    assert (multi.nvec, multi.num_logits) == ((3, 2), 5)
    assert np.array_equal(multi.to_env(torch.tensor([[0, 1], [2, 0]])), [[1, 1], [3, 0]])


def test_unsupported_action_spaces_are_refused_naming_the_optimizer() -> None:
    with pytest.raises(PolyfuseError, match="algo supports Discrete and MultiDiscrete"):
        ActionLayout.of(gym.spaces.Box(-1, 1, (2,)), "algo")
    with pytest.raises(PolyfuseError, match="1-D nvec"):
        ActionLayout.of(gym.spaces.MultiDiscrete([[2, 2], [2, 2]]), "algo")
