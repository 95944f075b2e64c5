"""TD targets (double vs plain), target-network updates (Polyak vs hard) and the epsilon schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from polyfuse.rl.replay import Transitions
from polyfuse_dqn.dqn import DQN
from polyfuse_dqn.plugin import DQNConfig
from polyfuse_dqn.updates import linear_schedule, td_targets, update_target
from torch import nn

NEXT_Q_ONLINE = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]])
NEXT_Q_TARGET = torch.tensor([[10.0, 4.0, 7.0], [2.0, 9.0, 6.0]])
REWARDS = torch.tensor([1.0, 0.0])
DISCOUNTS = torch.tensor([0.5, 0.25])


def test_plain_target_is_the_target_networks_max() -> None:
    # max_a Q_target = [10, 9]: 1 + 0.5 * 10, 0 + 0.25 * 9
    assert td_targets(REWARDS, DISCOUNTS, NEXT_Q_TARGET).tolist() == [6.0, 2.25]


def test_double_target_values_the_online_networks_choice() -> None:
    # the online network picks actions [1, 0]; the target network values them at [4, 2]
    assert td_targets(REWARDS, DISCOUNTS, NEXT_Q_TARGET, NEXT_Q_ONLINE).tolist() == [3.0, 0.5]


class FixedQ(nn.Module):
    """Q-values looked up by the observation's "id" key: the network a constructed example needs."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, observations) -> torch.Tensor:
        return self.table[torch.as_tensor(observations["id"])]


@pytest.mark.parametrize(("double", "expected"), [(False, [6.0, 2.25, 7.0]), (True, [3.0, 0.5, 7.0])])
def test_the_optimizer_wires_double_dqn_and_discounts(double: bool, expected: list[float]) -> None:
    dqn = DQN(DQNConfig(double_dqn=double, gamma=0.5))
    dqn.q_network = FixedQ(torch.cat([NEXT_Q_ONLINE, torch.zeros(1, 3)]))
    dqn.target_network = FixedQ(torch.cat([NEXT_Q_TARGET, torch.full((1, 3), 50.0)]))
    batch = Transitions(
        observations={"id": np.array([0, 0, 0])},
        actions=np.array([0, 0, 0]),
        rewards=np.array([1.0, 0.0, 7.0], dtype=np.float32),
        next_observations={"id": np.array([0, 1, 2])},
        terminated=np.array([False, False, True]),  # the third is terminal: its 50s must not count
        truncated=np.array([False, False, False]),
        horizons=np.array([1, 2, 1]),  # gamma ** horizon = 0.5, 0.25
    )
    assert dqn._targets(batch).tolist() == expected


class CountingQ(FixedQ):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table)
        self.batch_sizes: list[int] = []

    def forward(self, observations) -> torch.Tensor:
        self.batch_sizes.append(len(observations["id"]))
        return super().forward(observations)


def test_terminal_transitions_skip_the_next_state_networks() -> None:
    dqn = DQN(DQNConfig(double_dqn=True, gamma=0.5))
    dqn.q_network = CountingQ(torch.cat([NEXT_Q_ONLINE, torch.zeros(1, 3)]))
    dqn.target_network = CountingQ(torch.cat([NEXT_Q_TARGET, torch.full((1, 3), 50.0)]))
    batch = Transitions(
        observations={"id": np.array([0, 0, 0]), "text": ("a", "b", "c")},
        actions=np.array([0, 0, 0]),
        rewards=np.array([7.0, 1.0, 0.0], dtype=np.float32),
        next_observations={"id": np.array([2, 0, 1]), "text": ("x", "y", "z")},
        terminated=np.array([True, False, False]),
        truncated=np.array([False, False, False]),
        horizons=np.array([1, 1, 2]),
    )
    assert dqn._targets(batch).tolist() == [7.0, 3.0, 0.5], "the same targets as evaluating every row"
    assert dqn.target_network.batch_sizes == dqn.q_network.batch_sizes == [2], "the terminal row is left out"
    ended = Transitions(batch.observations, batch.actions, batch.rewards, batch.next_observations,
                        np.array([True, True, True]), batch.truncated, batch.horizons)
    assert dqn._targets(ended).tolist() == [7.0, 1.0, 0.0]
    assert dqn.target_network.batch_sizes == [2], "nothing bootstraps: no network runs"


def linear_pair() -> tuple[nn.Module, nn.Module]:
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        online.weight.fill_(1.0), online.bias.fill_(2.0), target.weight.fill_(0.0), target.bias.fill_(-2.0)
    return online, target


def test_hard_update_copies() -> None:
    online, target = linear_pair()
    update_target(target, online, tau=1.0)
    assert torch.equal(target.weight, online.weight) and torch.equal(target.bias, online.bias)
    assert target.weight.data_ptr() != online.weight.data_ptr()


def test_polyak_update_moves_part_of_the_way() -> None:
    online, target = linear_pair()
    update_target(target, online, tau=0.1)
    assert torch.allclose(target.weight, torch.full((2, 3), 0.1))  # 0.1 * 1 + 0.9 * 0
    assert torch.allclose(target.bias, torch.full((2,), -1.6))  # 0.1 * 2 + 0.9 * -2
    update_target(target, online, tau=0.1)
    assert torch.allclose(target.weight, torch.full((2, 3), 0.19))


def test_non_float_buffers_are_copied() -> None:
    online, target = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    online.num_batches_tracked.fill_(7)
    online.running_mean.fill_(1.0)
    update_target(target, online, tau=0.5)
    assert int(target.num_batches_tracked) == 7 and torch.allclose(target.running_mean, torch.full((2,), 0.5))


def parameters(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_hard_updates_happen_every_interval(make_pipeline) -> None:
    dqn = DQN(DQNConfig(learning_starts=0, batch_size=8, target_update_interval=3, learning_rate=1e-2,
                        exploration_steps=1_000))
    dqn.setup(make_pipeline(num_envs=2))
    initial = parameters(dqn.target_network)
    for expected_changed in [False, False, True, False, False, True]:  # since the last update
        dqn.iterate()  # one gradient step each
        target, online = parameters(dqn.target_network), parameters(dqn.q_network)
        changed = not all(torch.equal(a, b) for a, b in zip(target, initial))
        assert changed == expected_changed
        if dqn.gradient_steps % 3 == 0:
            assert all(torch.equal(a, b) for a, b in zip(target, online))
            initial = target
        else:
            assert not all(torch.equal(a, b) for a, b in zip(target, online))


def test_polyak_updates_follow_the_online_network_slowly(make_pipeline) -> None:
    dqn = DQN(DQNConfig(learning_starts=0, batch_size=8, target_update_interval=1, tau=0.25,
                        learning_rate=1e-2, exploration_steps=1_000))
    dqn.setup(make_pipeline(num_envs=2))
    dqn.iterate()  # syncs the target (nothing changed yet), then one gradient step and one Polyak step
    before = parameters(dqn.target_network)
    dqn.iterate()
    after, online = parameters(dqn.target_network), parameters(dqn.q_network)
    for old, new, current in zip(before, after, online):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * current)
    assert not all(torch.equal(a, b) for a, b in zip(after, online))


def test_linear_schedule() -> None:
    assert linear_schedule(1.0, 0.1, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 100, 50) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 100, 100) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 100, 10_000) == pytest.approx(0.1)
    assert linear_schedule(1.0, 0.1, 0, 0) == pytest.approx(0.1)  # no exploration phase


def test_epsilon_falls_over_the_fraction_of_the_budget(make_pipeline) -> None:
    config = DQNConfig(epsilon_start=1.0, epsilon_end=0.2, exploration_fraction=0.5, exploration_steps=64,
                       learning_starts=10_000)  # 32 steps to fall, 4 per iterate
    dqn = DQN(config)
    dqn.setup(make_pipeline(num_envs=4))
    assert dqn.epsilon == 1.0
    reported = [dqn.iterate()["epsilon"] for _ in range(10)]
    # the rate used at steps 0, 4, ... 36
    expected = [max(0.2, 1.0 - 0.8 * step / 32) for step in range(0, 40, 4)]
    assert reported == pytest.approx(expected)
    assert dqn.epsilon == pytest.approx(0.2)


def test_exploration_uses_epsilon(make_pipeline) -> None:
    """At epsilon 0 the actions are greedy; at epsilon 1 they ignore the network."""
    greedy = DQN(DQNConfig(epsilon_start=0.0, epsilon_end=0.0, learning_starts=10_000, exploration_steps=1_000))
    pipeline = make_pipeline(num_envs=8)
    greedy.setup(pipeline)
    observations = greedy._observations
    assert greedy._epsilon_greedy(observations, 0.0, np.random.default_rng(0)).tolist() == \
        greedy.act(observations).tolist()
    draws = {tuple(greedy._epsilon_greedy(observations, 1.0, np.random.default_rng(seed)).tolist())
             for seed in range(5)}
    assert len(draws) > 1
