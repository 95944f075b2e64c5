"""A2C and REINFORCE learn the text tasks of polyfuse.rl.testing in seconds (a wrong gradient sign would not)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from polyfuse.rl.testing import ScriptedReward
from polyfuse_a2c.a2c import A2C
from polyfuse_a2c.plugin import A2CConfig

REINFORCE = {"gamma": 0.95, "returns": "monte-carlo", "n_steps": 20, "learning_rate": 3e-3}
CHAIN = {"max_steps": 5, "multi": True}  # three right presses in five steps, else truncated; MultiDiscrete actions


def trained(pipeline: Any, iterations: int, **params: Any) -> tuple[A2C, float, float]:
    """Train; returns the optimizer and the success rates of the first and of the last 64 episodes."""
    a2c = A2C(A2CConfig(**params))
    a2c.setup(pipeline)
    for _ in range(iterations):
        a2c.iterate()
    success = [episode.success for episode in pipeline.envs.pop_episodes()]
    assert len(success) >= 128
    return a2c, float(np.mean(success[:64])), float(np.mean(success[-64:]))


def greedy_chain_success(a2c: A2C, helpers: Any, episodes: int = 32) -> float:
    """Deterministic actions on fresh chain episodes (seeds training never saw)."""
    envs = helpers.make_vector_env("chain", num_envs=episodes, seed=999, **CHAIN)
    observations, _ = envs.reset()
    outcome = np.zeros(episodes)  # 0 running, 1 reached the goal, -1 truncated
    for _ in range(CHAIN["max_steps"]):
        observations, _, terminated, truncated, _ = envs.step(a2c.act(observations))
        outcome = np.where(outcome == 0, terminated * 1.0 - truncated * 1.0, outcome)
    envs.close()
    return float(np.mean(outcome == 1))


def test_a2c_with_sb3_defaults_learns_the_text_bandit(make_pipeline: Any) -> None:
    a2c, first, last = trained(make_pipeline("bandit", num_envs=8), 100)
    assert first < 0.75 and last > 0.9
    texts = ("go right", "go left") * 20
    vectors = np.random.default_rng(3).uniform(-1, 1, (40, 4)).astype(np.float32)
    assert a2c.act({"vector": vectors, "text": texts}).tolist() == [1, 0] * 20


def test_the_rewards_are_the_reward_sources(make_pipeline: Any) -> None:
    """A reward source paying for the wrong word's action is what A2C learns, scored once per rollout."""
    reward = ScriptedReward(lambda batch: 1.0 - batch.env_rewards)
    _a2c, _, last = trained(make_pipeline("bandit", num_envs=8, reward=reward), 100)
    assert last < 0.1 and len(reward.batches) == 100


@pytest.mark.parametrize(
    "params",
    [
        {"gamma": 0.95},  # A2C: 5-step returns bootstrapped from the critic, truncation from the final obs
        {**REINFORCE, "baseline": True},
        {**REINFORCE, "baseline": False},
    ],
    ids=["a2c", "reinforce-baseline", "reinforce"],
)
def test_learns_the_multi_step_chain(make_pipeline: Any, helpers: Any, params: dict[str, Any]) -> None:
    pipeline = make_pipeline("chain", num_envs=8, **CHAIN)
    iterations = 200 if params.get("returns") is None else 30  # 8000 or 4800 steps
    a2c, first, last = trained(pipeline, iterations, **params)
    assert first < 0.4 and last > 0.9
    assert greedy_chain_success(a2c, helpers) > 0.9


@pytest.mark.parametrize("returns", ["gae", "monte-carlo"])
def test_a2c_with_memory_recalls_the_cue(make_pipeline: Any, returns: str) -> None:
    """Recall's cue is gone when the choice comes (chance: 0.5); a memory unrolled over the rollout keeps it."""
    pipeline = make_pipeline("recall", num_envs=8, seed=0, delay=2)
    params = dict(n_steps=8, sequence_length=4, learning_rate=3e-3, returns=returns, ent_coef=0.0)
    _, _, last = trained(pipeline, 150, memory=32, **params)
    assert last > 0.9
    _, _, memoryless = trained(make_pipeline("recall", num_envs=8, seed=0, delay=2), 150, **params)
    assert memoryless < 0.75
