"""Rewards that learn during a run: segments in, updates on a schedule, metrics, checkpoints, fresh scores.

``RegressionReward`` is a small but real learned reward: a network built from
the pipeline's own encoders and fuser (through the run context), regressing
the environment's reward of the transitions in the episodes it observed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import Field

import polyfuse
from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.observations import concatenate, take
from polyfuse.rewards import RewardBatch, RewardSource, RunContext, Segment
from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer


class RegressionConfig(polyfuse.ComponentConfig):
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, gt=0)


class RegressionReward(RewardSource):
    """r(s, a) fitted to the environment's rewards of the observed episodes (mean squared error)."""

    stationary = False
    segment_length = 0  # whole episodes

    def __init__(self, config: RegressionConfig, context: RunContext) -> None:
        self.config = config
        self.num_actions = int(context.action_space.n)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.network = context.make_network()
            self.head = torch.nn.Linear(self.network.output_dim, self.num_actions)
        self.parameters = [p for p in [*self.network.parameters(), *self.head.parameters()] if p.requires_grad]
        self.adam = torch.optim.Adam(self.parameters, lr=config.learning_rate)
        self.rng = np.random.default_rng(context.seed)
        self.observations: list[Mapping[str, Any]] = []
        self.actions: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.scored = 0
        self.updates = 0

    def _predict(self, observations: Mapping[str, Any], actions: np.ndarray) -> torch.Tensor:
        values = self.head(self.network(observations))
        return values.gather(1, torch.as_tensor(actions, dtype=torch.long).reshape(-1, 1)).squeeze(1)

    def score(self, batch: RewardBatch) -> np.ndarray:
        self.scored += len(batch)
        with torch.no_grad():
            return self._predict(batch.observations, batch.actions).numpy().astype(np.float32)

    def observe(self, segments: Sequence[Segment]) -> None:
        for segment in segments:
            self.observations.append(segment.observations)
            self.actions.append(segment.actions)
            self.targets.append(segment.env_rewards)

    def update(self) -> dict[str, float]:
        if not self.actions:
            return {}
        observations = concatenate(self.observations)
        actions, targets = np.concatenate(self.actions), np.concatenate(self.targets)
        rows = self.rng.integers(0, len(actions), self.config.batch_size)
        loss = torch.nn.functional.mse_loss(self._predict(take(observations, rows), actions[rows]),
                                            torch.as_tensor(targets[rows]))
        self.adam.zero_grad()
        loss.backward()
        self.adam.step()
        self.updates += 1
        return {"loss": loss.item(), "transitions": float(len(actions)), "updates": float(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "head": self.head.state_dict(),
                "adam": self.adam.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.head.load_state_dict(state["head"])
        self.adam.load_state_dict(state["adam"])
        self.updates = int(state["updates"])


BUILT: list[RegressionReward] = []


def build_regression(config: RegressionConfig, context: RunContext) -> RegressionReward:
    reward = RegressionReward(config, context)
    BUILT.append(reward)
    return reward


class RegressionPlugin:
    @polyfuse.hookimpl
    def register_rewards(self, register: Any) -> None:
        register("test-regression", build_regression, config=RegressionConfig)


OPTIMIZERS = {
    "ppo": {"n_steps": 16, "activation": "relu"},
    "dqn": {"learning_starts": 128, "batch_size": 32},
}


def config_for(optimizer: str, output_dir: Path, registry: Any, **trainer: Any) -> PipelineConfig:
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 16, "vectorization": "native"},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "reward": "test-regression",
        "optimizer": {"name": optimizer, "params": OPTIMIZERS[optimizer]},
        "trainer": {"total_steps": 1024, "eval_every": 1024, "eval_episodes": 32, "checkpoint_every": 512,
                    "reward_update_every": 64, "output_dir": str(output_dir), **trainer},
    }, registry)


@pytest.fixture
def registry(make_registry: Any) -> Any:
    BUILT.clear()
    return make_registry(RegressionPlugin())


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_learning_reward_trains_alongside_the_policy(optimizer: str, registry: Any, tmp_path: Path) -> None:
    Trainer(config_for(optimizer, tmp_path, registry), registry, progress=False).run()
    reward = BUILT[-1]
    assert reward.updates == 1024 // 64, "update() on the reward_update_every schedule"
    assert sum(len(a) for a in reward.actions) == 1024, "every step reached the reward in a segment (1-step episodes)"
    assert reward.scored >= 512, "the optimizer trained on the reward's scores"
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/updates" in r]
    updates = [r["reward/updates"] for r in logged]  # each line: the mean over the updates since the last
    assert updates == sorted(updates) and 1024 // 64 - 4 <= updates[-1] <= 1024 // 64
    assert all(r["reward/loss"] >= 0 for r in logged) and 768 <= logged[-1]["reward/transitions"] <= 1024


def test_the_rewards_network_shares_frozen_encoders_with_the_policy(registry: Any, tmp_path: Path) -> None:
    trainer = Trainer(config_for("ppo", tmp_path, registry, total_steps=256), registry, progress=False)
    trainer.run()
    networks = trainer.network_factory.networks
    assert BUILT[-1].network in networks and len(networks) >= 2, "the policy's network and the reward's"
    assert len({id(network.encoders["question"]) for network in networks}) == 1, "one frozen sbert for all"
    assert len({id(network.encoders["image"]) for network in networks}) == len(networks), "trainable: one each"


def test_a_learning_rewards_state_survives_resume(registry: Any, tmp_path: Path) -> None:
    Trainer(config_for("dqn", tmp_path, registry, total_steps=512), registry, progress=False).run()
    saved = read_checkpoint_tree(checkpoint_location(tmp_path))["reward"]
    assert saved["updates"] == 512 // 64
    Trainer(config_for("dqn", tmp_path, registry, total_steps=1024), registry, resume=True, progress=False).run()
    resumed = BUILT[-1]
    assert resumed.updates == 1024 // 64, "the update count continued from the checkpoint"
    updates = [r["reward/updates"] for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/updates" in r]
    assert updates == sorted(updates) and updates[-1] > 512 // 64, "the logged count went on from the checkpoint"


def test_dqn_scores_replayed_transitions_with_the_current_reward(registry: Any, tmp_path: Path) -> None:
    """Scored at sampling time: a reward that learns is never read stale from the replay buffer."""
    Trainer(config_for("dqn", tmp_path, registry, total_steps=512), registry, progress=False).run()
    reward = BUILT[-1]
    collected, gradient_steps = 512, (512 - 128) // 16 + 1
    assert reward.scored >= gradient_steps * 32, "each gradient step scored its sampled batch"
    assert reward.scored != collected, "rewards were not scored once at collection"


def test_contributing_shows_this_reward_verbatim() -> None:
    """CONTRIBUTING.md's worked example is this tested class, not a sketch that drifts."""
    import inspect

    guide = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for cls in (RegressionConfig, RegressionReward):
        assert inspect.getsource(cls) in guide, f"update CONTRIBUTING.md's listing of {cls.__name__}"
