"""Policies with memory: the GRU between trunk and heads, sequence minibatches, and cloning whole episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.config import EnvConfig, WarmStartConfig
from polyfuse.errors import PolyfuseError
from polyfuse.rl import distributions
from polyfuse.rl.configs import OnPolicyConfig
from polyfuse.rl.heads import Memory, PolicyNetwork
from polyfuse.rl.on_policy import OnPolicyAlgorithm, Rollout, sequence_minibatches
from polyfuse.rl.testing import RECALL_ID as RECALL
from polyfuse.training.warm_start import behaviour_cloning, collect_demonstrations
from pydantic import ValidationError
from torch import nn


class PolicyGradient(OnPolicyAlgorithm):
    """The shortest on-policy subclass: one policy-gradient step on each rollout, through whole sequences."""

    name = "pg"

    def _update(self, rollout: Rollout) -> dict[str, float]:
        rows = sequence_minibatches(self.config.n_steps, self.envs.num_envs, self.config.sequence_length,
                                    rollout.size, None)[0]
        logits, _ = self._forward_rows(rollout, rows)
        loss = -(distributions.log_prob(logits, rollout.actions[rows], self.layout.nvec) * rollout.advantages[rows])
        self._descend(loss.mean(), rollout.size)
        return {}


def test_sequence_minibatches_cover_the_rollout_in_runs_of_one_env() -> None:
    steps, envs, length = 8, 3, 4
    batches = sequence_minibatches(steps, envs, length, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert [len(rows) for rows in batches] == [8, 8, 8]  # two sequences of 4 per minibatch, six sequences
    assert sorted(torch.cat(batches).tolist()) == list(range(steps * envs))
    for rows in batches:
        grid = rows.reshape(length, -1)  # time-major: column c is sequence c
        assert torch.all(grid % envs == grid[0] % envs), "one env per sequence"
        assert torch.all(torch.diff(grid // envs, dim=0) == 1), "consecutive steps"
        assert torch.all(grid[0] // envs % length == 0), "sequences start on the grid"


def test_an_episode_start_forgets_the_state() -> None:
    memory = Memory(input_dim=3, size=5)
    features, remembered = torch.randn(2, 3), torch.randn(2, 5)
    readout, state = memory(features, remembered, torch.tensor([True, False]))
    fresh = [memory(features[i : i + 1], memory.initial(1), torch.tensor([False]))[1][0] for i in range(2)]
    torch.testing.assert_close(state[0], fresh[0])
    assert not torch.allclose(state[1], fresh[1])
    torch.testing.assert_close(readout, torch.cat([features, state], dim=-1))  # the heads read both
    unrolled = memory.unroll(features.expand(4, 2, 3), memory.initial(2), torch.zeros(4, 2, dtype=torch.bool))
    assert unrolled.shape == (4, 2, memory.output_dim) == (4, 2, 8)


def test_a_network_with_memory_refuses_observations_without_a_state(helpers: Any) -> None:
    envs = helpers.make_vector_env("recall", num_envs=2)
    trunk = helpers.make_network(envs.single_observation_space)
    memory = Memory(trunk.output_dim, 8)
    policy = PolicyNetwork(trunk, nn.Linear(memory.output_dim, 2), memory)
    observations, _ = envs.reset()
    with pytest.raises(PolyfuseError, match="has a memory"):
        policy(observations)
    logits, state = policy.step(observations, torch.zeros(2, 8), torch.ones(2, dtype=torch.bool))
    assert logits.shape == (2, 2) and state.shape == (2, 8)
    envs.close()


@pytest.mark.parametrize(
    "params, problem",
    [({"memory": 8, "n_steps": 10}, "multiple of sequence_length"), ({"memory": 8, "shared_trunk": False}, "shared")],
)
def test_memory_settings_that_cannot_work_are_refused(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        OnPolicyConfig(**params)


def test_demonstrations_keep_each_episodes_rows_in_order() -> None:
    demonstrations = collect_demonstrations(EnvConfig(id=RECALL, num_envs=3, kwargs={"delay": 2}), 9, seed=0)
    complete = [rows for rows in demonstrations.episodes if len(rows) == 4]
    assert len(complete) >= 9
    assert sorted(np.concatenate(demonstrations.episodes).tolist()) == list(range(len(demonstrations.labels)))
    for rows in complete:
        texts = [demonstrations.batch["text"][row] for row in rows]
        assert texts[0].startswith("go ") and texts[1:3] == ["wait", "wait"] and texts[3] == "go"
        assert np.all(np.diff(rows) == 3), "one env's steps, one vector step apart"


@pytest.mark.parametrize("memory", [16, 0])
def test_cloning_whole_episodes_teaches_a_memory_what_the_expert_saw(make_pipeline: Any, memory: int) -> None:
    """The expert's action at every step is the cue's: only a policy that remembers the cue can follow it."""
    demonstrations = collect_demonstrations(EnvConfig(id=RECALL, num_envs=8, kwargs={"delay": 2}), 200, seed=0)
    algorithm = PolicyGradient(OnPolicyConfig(memory=memory, n_steps=16, sequence_length=4, hidden_sizes=[16]))
    algorithm.setup(make_pipeline("recall", num_envs=2, delay=2))
    metrics = behaviour_cloning(algorithm, demonstrations,
                                WarmStartConfig(episodes=200, epochs=30, batch_size=32, learning_rate=1e-2), seed=0)
    assert metrics["warm_start/samples"] == len(demonstrations.labels)
    if memory:
        assert metrics["warm_start/accuracy"] > 0.97
    else:  # the first step of four shows the cue; on the other three, a guess
        assert metrics["warm_start/accuracy"] < 0.75
    algorithm.iterate()  # and RL goes on from the cloned policy, through the same sequences
