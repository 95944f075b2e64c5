"""OffPolicyAlgorithm through a small subclass: where rewards are scored, the loop, progress and checkpoints.

``RewardRegression`` is what an off-policy plugin writes: networks, exploration and a gradient step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.observations import batch_length
from polyfuse.rewards import EnvReward
from polyfuse.rl.base import GeneratorKind
from polyfuse.rl.configs import OffPolicyConfig
from polyfuse.rl.heads import PolicyNetwork, mlp
from polyfuse.rl.off_policy import OffPolicyAlgorithm
from polyfuse.rl.replay import Transitions
from polyfuse.rl.testing import ScriptedReward
from polyfuse.training import Pipeline, Progress
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from torch.nn import functional


class RewardRegression(OffPolicyAlgorithm):
    """Explores at random and fits each action's value to the rewards of sampled batches (a one-step Q)."""

    name = "regress"
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"replay": "numpy", "explore": "numpy"}

    def _build(self, pipeline: Pipeline) -> None:
        trunk = pipeline.make_network()
        self.network = PolicyNetwork(trunk, mlp(trunk.output_dim, [], pipeline.action_space.n, activation="relu"))
        self.adam = torch.optim.Adam(self.network.parameters(), lr=1e-2)
        self.batches: list[Transitions] = []

    def _explore(self, observations: Mapping[str, Any]) -> np.ndarray:
        return self.rng["explore"].integers(0, self.pipeline.action_space.n, batch_length(observations))

    def _gradient_step(self, batch: Transitions) -> dict[str, float]:
        self.batches.append(batch)
        actions = torch.as_tensor(batch.actions).unsqueeze(1)
        values = self.network(batch.observations).gather(1, actions).squeeze(1)
        loss = functional.mse_loss(values, torch.as_tensor(batch.rewards))
        self._descend(loss, len(batch))
        return {"loss": loss.item()}

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        return self.action_logits(observations).argmax(1).numpy()

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        return self.network(observations)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.network.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "network": self.network.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.network.load_state_dict(state["network"])


SMALL = {"learning_starts": 8, "batch_size": 16, "buffer_size": 500}


def build(pipeline: Pipeline, **params: Any) -> RewardRegression:
    algorithm = RewardRegression(OffPolicyConfig(**{**SMALL, **params}))
    algorithm.setup(pipeline)
    return algorithm


def test_the_loop_collects_then_learns_and_counts_progress(make_pipeline) -> None:
    algorithm = build(make_pipeline(num_envs=4), train_frequency=2, gradient_steps=3, learning_starts=12)
    assert algorithm.iterate() == {"buffer_size": 8.0}  # 8 env steps: not yet 12
    assert algorithm.progress == Progress(env_steps=8, gradient_steps=0, samples=0)
    metrics = algorithm.iterate()
    assert set(metrics) == {"buffer_size", "loss"} and metrics["buffer_size"] == 16.0
    assert algorithm.progress == Progress(env_steps=16, gradient_steps=3, samples=3 * 16)
    assert algorithm.iterations == 2


def test_a_stationary_reward_is_scored_at_collection_and_stored(make_pipeline) -> None:
    algorithm = build(make_pipeline(num_envs=4, reward=EnvReward(scale=3.0)), learning_starts=10_000)
    for _ in range(5):
        algorithm.iterate()
    stored = algorithm.replay.gather(np.arange(len(algorithm.replay)))
    assert set(stored.rewards.tolist()) == {0.0, 3.0}


def test_a_reward_that_changes_is_scored_on_every_sampled_batch(make_pipeline) -> None:
    """Replay keeps the environment's rewards; each gradient step sees the reward source as it is then."""
    reward = ScriptedReward(lambda batch: np.full(len(batch), 5.0))
    algorithm = build(make_pipeline(num_envs=4, reward=reward))
    for _ in range(3):
        algorithm.iterate()
    stored = algorithm.replay.gather(np.arange(len(algorithm.replay)))
    assert set(stored.rewards.tolist()) <= {0.0, 1.0}, "stored unscored: the environment's rewards"
    # scored when sampled (one batch per gradient step, from 8 env steps on), never when collected
    assert [len(batch) for batch in reward.batches] == [16, 16]
    assert algorithm.batches[-1].rewards.tolist() == [5.0] * 16
    reward.rule = lambda batch: np.where(batch.env_rewards > 0, -1.0, 2.0)
    algorithm.iterate()
    sampled = algorithm.batches[-1]
    assert sampled.rewards.tolist() == np.where(reward.batches[-1].env_rewards > 0, -1.0, 2.0).tolist()
    assert reward.batches[-1].actions.tolist() == sampled.actions.tolist()


def test_n_step_returns_are_refused_with_a_reward_that_changes(make_pipeline) -> None:
    reward = ScriptedReward(lambda batch: batch.env_rewards)
    with pytest.raises(PolyfuseError, match=r"optimizer.params.n_step is 3.*Set optimizer.params.n_step: 1"):
        build(make_pipeline(reward=reward), n_step=3)
    build(make_pipeline(reward=ScriptedReward(lambda batch: batch.env_rewards, stationary=True)), n_step=3)


def test_a_checkpoint_continues_the_run_exactly(helpers, tmp_path) -> None:
    envs = helpers.make_vector_env("chain", num_envs=3, seed=2)
    original = build(helpers.pipeline_for(envs, seed=7))
    for _ in range(6):
        original.iterate()
    save_checkpoint(tmp_path, original.state_dict())
    paused = envs.snapshot()
    continued = [original.iterate() for _ in range(4)]

    resumed = build(helpers.pipeline_for(paused, seed=1))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint"))
    assert resumed.progress == Progress(env_steps=18, gradient_steps=4, samples=64)  # learning from 9 on
    assert [resumed.iterate() for _ in range(4)] == continued
