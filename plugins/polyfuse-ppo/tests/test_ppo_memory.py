"""A policy with memory (``memory > 0``): PPO learns what only an earlier observation told it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse_ppo.plugin import PPOConfig
from polyfuse_ppo.ppo import PPO

RECALL = dict(n_steps=16, n_epochs=4, batch_size=64, learning_rate=3e-3, ent_coef=0.0, sequence_length=8)


def trained(helpers: Any, memory: int, iterations: int = 30) -> tuple[PPO, float]:
    """PPO on the recall task; returns it and the success rate of its last 64 training episodes."""
    pipeline = helpers.pipeline_for(helpers.make_vector_env("recall", num_envs=8, seed=0, delay=2), seed=0)
    ppo = PPO(PPOConfig(**RECALL, memory=memory))
    ppo.setup(pipeline)
    for _ in range(iterations):
        ppo.iterate()
    episodes = pipeline.envs.pop_episodes()
    pipeline.envs.close()
    return ppo, float(np.mean([episode.success for episode in episodes[-64:]]))


def greedy_success(ppo: PPO, helpers: Any, episodes: int = 64) -> float:
    """Greedy actions on fresh episodes, one per env, the memory reset first (as evaluation does)."""
    envs = helpers.make_vector_env("recall", num_envs=episodes, seed=10_000, delay=2)
    observations, _ = envs.reset()
    ppo.reset_memory(episodes)
    running, success = np.ones(episodes, dtype=bool), np.zeros(episodes, dtype=bool)
    while running.any():
        observations, rewards, terminated, truncated, _ = envs.step(ppo.act(observations))
        ended = running & (terminated | truncated)
        success[ended] = rewards[ended] > 0
        running &= ~ended
    envs.close()
    return float(success.mean())


def test_memory_recalls_the_cue_where_a_memoryless_policy_guesses(helpers: Any) -> None:
    remembering, training_success = trained(helpers, memory=32)
    assert training_success > 0.9
    assert greedy_success(remembering, helpers) > 0.95
    memoryless, training_success = trained(helpers, memory=0)
    assert training_success < 0.75  # the cue is gone by the time the choice is made: chance is 0.5
    assert greedy_success(memoryless, helpers) < 0.75


def test_minibatches_unroll_to_the_policy_the_rollout_was_collected_with(helpers: Any) -> None:
    """Before any update, sequences unrolled from their stored memory give the collected log-probs and values."""
    from polyfuse.rl import distributions

    pipeline = helpers.pipeline_for(helpers.make_vector_env("chain", num_envs=3, seed=1, max_steps=3), seed=0)
    ppo = PPO(PPOConfig(n_steps=8, sequence_length=4, batch_size=8, memory=8))
    ppo.setup(pipeline)
    ppo._collect()  # episodes run across the rollout's end
    rollout = ppo._collect()
    assert rollout.starts is not None and 0 < int(rollout.starts.sum()) < rollout.size
    seen = []
    with torch.no_grad():
        for rows in ppo._minibatches(rollout):
            logits, values = ppo._forward_rows(rollout, rows)
            log_probs = distributions.log_prob(logits, rollout.actions[rows], ppo.layout.nvec)
            torch.testing.assert_close(log_probs, rollout.log_probs[rows])
            torch.testing.assert_close(values, rollout.values[rows])
            seen += rows.tolist()
    assert sorted(seen) == list(range(rollout.size))
    pipeline.envs.close()


def test_a_policy_with_memory_refuses_to_score_single_observations(helpers: Any) -> None:
    pipeline = helpers.pipeline_for(helpers.make_vector_env("recall", num_envs=2, seed=0), seed=0)
    ppo = PPO(PPOConfig(n_steps=16, memory=8))
    ppo.setup(pipeline)
    observations, _ = pipeline.envs.reset()
    with pytest.raises(PolyfuseError, match="memory"):
        ppo.action_logits(observations)
    assert ppo.memory_size == 8
    pipeline.envs.close()


@pytest.mark.parametrize("dropped", [(), ("rollout_memory",), ("reference_memory",)])
def test_a_resumed_run_continues_its_episodes_with_their_memory(
    helpers: Any, tmp_path: Path, dropped: tuple[str, ...]
) -> None:
    """Checkpointed mid-episode, the run resumes exactly; dropping the saved memory would change it."""
    # with a KL penalty, whose reference policy's memory must come back too
    params = dict(n_steps=6, sequence_length=3, n_epochs=2, batch_size=6, memory=8, hidden_sizes=[16], kl_coef=0.5)
    envs = helpers.make_vector_env("chain", num_envs=3, seed=5, max_steps=5)
    original = PPO(PPOConfig(**params))
    original.setup(helpers.pipeline_for(envs, seed=11))
    original.iterate()
    assert not bool(original._starts.all()), "the checkpoint falls mid-episode"
    save_checkpoint(tmp_path, {"optimizer": original.state_dict()})
    paused_envs = envs.snapshot()
    continued = [original.iterate() for _ in range(2)]

    resumed = PPO(PPOConfig(**params))
    pipeline = helpers.pipeline_for(paused_envs, seed=999)
    resumed.setup(pipeline)
    pipeline.envs.restored = True  # as the trainer marks environments it restored from the checkpoint
    state = load_checkpoint(tmp_path / "checkpoint")["optimizer"]
    for key in dropped:
        del state[key]
    resumed.load_state_dict(state)
    after_resume = [resumed.iterate() for _ in range(2)]
    assert (continued == after_resume) is not dropped


def test_the_kl_reference_follows_each_episode_with_a_memory_of_its_own(helpers: Any) -> None:
    """Taken from the policy, the reference gives the rollout's own log-probs, across rollouts and episodes that
    cross them; starting its memory empty mid-episode would not."""
    from polyfuse.rl import distributions

    pipeline = helpers.pipeline_for(helpers.make_vector_env("chain", num_envs=3, seed=1, max_steps=5), seed=0)
    ppo = PPO(PPOConfig(n_steps=4, sequence_length=4, batch_size=8, memory=8, kl_coef=0.5))
    ppo.setup(pipeline)
    ppo._collect()  # episodes run across the rollout's end
    ppo._take_reference()  # the policy as it is: its KL to the reference is 0 where the memories agree
    for _ in range(3):
        rollout = ppo._collect()
        log_probs = distributions.log_prob(ppo._reference_logits(rollout), rollout.actions, ppo.layout.nvec)
        torch.testing.assert_close(log_probs, rollout.log_probs)
    assert ppo._reference_memory is not None and not bool(ppo._starts.all())
    ppo._reference_memory.zero_()  # forgetting what the running episodes showed the reference
    rollout = ppo._collect()
    log_probs = distributions.log_prob(ppo._reference_logits(rollout), rollout.actions, ppo.layout.nvec)
    assert not torch.allclose(log_probs, rollout.log_probs)
    metrics = ppo.iterate()
    assert metrics["kl_to_reference"] >= 0
    pipeline.envs.close()
