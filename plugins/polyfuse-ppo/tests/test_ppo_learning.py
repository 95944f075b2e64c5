"""PPO learns small multimodal tasks whose answer is in the text, within seconds on a CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from polyfuse_ppo.plugin import PPOConfig
from polyfuse_ppo.ppo import PPO

FAST = dict(n_steps=16, n_epochs=4, batch_size=32, learning_rate=3e-3, ent_coef=0.0)


def train(pipeline: Any, iterations: int, **params: Any) -> tuple[PPO, float, list[dict[str, float]]]:
    """Train; returns the optimizer, the success rate of the last 64 training episodes and the metrics."""
    ppo = PPO(PPOConfig(**{**FAST, **params}))
    ppo.setup(pipeline)
    metrics = [ppo.iterate() for _ in range(iterations)]
    episodes = pipeline.envs.pop_episodes()
    assert len(episodes) >= 64
    return ppo, float(np.mean([e.success for e in episodes[-64:]])), metrics


def test_ppo_learns_the_text_bandit(make_pipeline: Any, helpers: Any) -> None:
    pipeline = make_pipeline("bandit", num_envs=8, seed=0)
    ppo, success, metrics = train(pipeline, 15)
    assert success > 0.9
    # Greedy actions on fresh observations read the word, whatever the noise vector says.
    rng = np.random.default_rng(1)
    texts = ("go left", "go right") * 50
    observations = {"vector": rng.uniform(-1, 1, (100, 4)).astype(np.float32), "text": texts}
    assert np.array_equal(ppo.act(observations, deterministic=True), np.array([0, 1] * 50))
    assert metrics[-1]["entropy"] < metrics[0]["entropy"]


def test_an_untrained_policy_is_at_chance(make_pipeline: Any) -> None:
    """The bar above is not met by chance: before learning, success is near 0.5."""
    _, success, _ = train(make_pipeline("bandit", num_envs=8, seed=0), 1, learning_rate=1e-9)
    assert success < 0.75


def greedy_success(ppo: PPO, helpers: Any, episodes: int = 32, **env_kwargs: Any) -> float:
    """Success rate of deterministic actions on fresh episodes (other seeds than training's)."""
    envs = helpers.make_vector_env("chain", num_envs=episodes, seed=10_000, **env_kwargs)
    observations, _ = envs.reset()
    done = np.zeros(episodes, dtype=bool)
    succeeded = np.zeros(episodes, dtype=bool)
    while not done.all():
        observations, _, terminated, truncated, _ = envs.step(ppo.act(observations, deterministic=True))
        succeeded |= terminated & ~done
        done |= terminated | truncated
    envs.close()
    return float(succeeded.mean())


@pytest.mark.parametrize("shared_trunk", [True, False], ids=["shared", "separate"])
def test_ppo_learns_a_multi_step_task_with_truncation_and_multi_discrete_actions(
    make_pipeline: Any, helpers: Any, shared_trunk: bool
) -> None:
    # Three correct presses within five steps; the rest are truncated (bootstrapped from the final obs).
    env_kwargs = dict(max_steps=5, multi=True)
    pipeline = make_pipeline("chain", num_envs=8, seed=0, **env_kwargs)
    ppo = PPO(PPOConfig(**FAST, shared_trunk=shared_trunk, gamma=0.95))
    ppo.setup(pipeline)
    assert greedy_success(ppo, helpers, **env_kwargs) < 0.9  # the bar below is not met by chance
    metrics = [ppo.iterate() for _ in range(30)]
    success = np.mean([e.success for e in pipeline.envs.pop_episodes()[-64:]])
    assert success > 0.8
    assert greedy_success(ppo, helpers, **env_kwargs) > 0.9
    assert metrics[-1]["explained_variance"] > metrics[0]["explained_variance"]
    actions = ppo.act({"vector": np.eye(4, dtype=np.float32)[[0, 0, 0]], "text": ("press red", "press green", "press blue")})
    assert actions.shape == (3, 2)
    assert actions[:, 0].tolist() == [1, 2, 3]  # the space's values start at 1
