"""The optimizer's behaviour around the update: metrics, early stop, clipping, acting, rewards and refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from polyfuse.rl.testing import ScriptedReward
from polyfuse.training import Progress
from polyfuse_ppo.plugin import PPOConfig
from polyfuse_ppo.ppo import PPO

SMALL = dict(n_steps=8, n_epochs=2, batch_size=8, learning_rate=1e-3, hidden_sizes=[16])
METRICS = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
           "learning_rate", "gradient_steps", "early_stopped"}


def build(pipeline: Any, **params: Any) -> PPO:
    ppo = PPO(PPOConfig(**{**SMALL, **params}))
    ppo.setup(pipeline)
    return ppo


def test_iterate_reports_the_documented_metrics_as_floats(make_pipeline: Any) -> None:
    ppo = build(make_pipeline("chain"))
    metrics = ppo.iterate()
    assert set(metrics) == METRICS
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["gradient_steps"] == 8.0 and metrics["early_stopped"] == 0.0
    assert ppo.progress == Progress(env_steps=8 * 4, gradient_steps=8, samples=2 * 8 * 4)
    assert set(build(make_pipeline("chain"), kl_coef=0.1).iterate()) == METRICS | {"kl_to_reference"}


def test_target_kl_stops_the_epochs_early(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(num_envs=8), target_kl=1e-6, n_epochs=10, learning_rate=0.05, batch_size=16)
    metrics = ppo.iterate()
    assert metrics["early_stopped"] == 1.0
    assert metrics["gradient_steps"] < 10 * 4
    # the minibatch that stopped the epochs made no step: progress counts the steps made
    assert ppo.progress.gradient_steps == metrics["gradient_steps"] and ppo.progress.samples == 16 * ppo.gradient_steps
    relaxed = build(make_pipeline(num_envs=8), target_kl=10.0, n_epochs=10, learning_rate=0.05, batch_size=16).iterate()
    assert relaxed["early_stopped"] == 0.0 and relaxed["gradient_steps"] == 40.0


def test_every_gradient_step_is_clipped_to_max_grad_norm(make_pipeline: Any, monkeypatch: Any) -> None:
    norms: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        original(parameters, max_norm, *args, **kwargs)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item())
        return torch.tensor(0.0)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    build(make_pipeline(), max_grad_norm=1e-3).iterate()
    assert len(norms) == 8
    assert max(norms) <= 1e-3 * 1.0001


def test_sampled_actions_do_not_change_the_training_run(make_pipeline: Any) -> None:
    observations = {"vector": np.zeros((5, 4), np.float32), "text": ("go left",) * 5}
    quiet, busy = build(make_pipeline(seed=1)), build(make_pipeline(seed=1))
    for _ in range(2):
        quiet.iterate()
        busy.act(observations, deterministic=False)
        busy.iterate()
    for a, b in zip(quiet.model.parameters(), busy.model.parameters()):
        assert torch.equal(a, b)


def test_act_and_action_logits(make_pipeline: Any) -> None:
    ppo = build(make_pipeline())
    observations = {"vector": np.zeros((6, 4), np.float32), "text": ("go left", "go right") * 3}
    logits = ppo.action_logits(observations)
    assert logits.shape == (6, 2) and logits.requires_grad
    greedy = ppo.act(observations)
    assert greedy.shape == (6,) and greedy.dtype == np.int64
    assert np.array_equal(greedy, logits.argmax(1).numpy())
    # Warm start hands text as numpy object arrays; that works too.
    as_array = {**observations, "text": np.array(observations["text"], dtype=object)}
    torch.testing.assert_close(ppo.action_logits(as_array), logits)


def test_trainable_parameters_are_the_policys(make_pipeline: Any) -> None:
    shared = build(make_pipeline())
    assert {id(p) for p in shared.trainable_parameters()} == {id(p) for p in shared.model.policy.parameters()}
    separate = build(make_pipeline(), shared_trunk=False)
    critic = {id(p) for p in separate.model.critic_trunk.parameters()}
    assert critic and not critic & {id(p) for p in separate.trainable_parameters()}
    frozen = build(make_pipeline(frozen_text=True))
    text_layer = frozen.model.policy.trunk.encoders["text"].layer.weight
    assert all(p is not text_layer for p in frozen.trainable_parameters())
    assert all(p is not text_layer for group in frozen.adam.param_groups for p in group["params"])


def test_hidden_sizes_shape_the_heads(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(), hidden_sizes=[8, 5], activation="relu")
    widths = [m.out_features for m in ppo.model.policy.head if isinstance(m, torch.nn.Linear)]
    assert widths == [8, 5, 2]
    assert [m.out_features for m in ppo.model.value_head if isinstance(m, torch.nn.Linear)] == [8, 5, 1]
    linear = build(make_pipeline(), hidden_sizes=[])
    assert len(linear.model.policy.head) == 1


def test_minibatches_of_batch_size_cover_the_rollout(make_pipeline: Any) -> None:
    # 3 steps * 4 envs = 12 samples: batches of 5, 5, 2 per epoch; a batch larger than the rollout is the rollout.
    assert build(make_pipeline(), n_steps=3, batch_size=5, n_epochs=2).iterate()["gradient_steps"] == 6
    assert build(make_pipeline(), n_steps=3, batch_size=1000, n_epochs=2).iterate()["gradient_steps"] == 2


def test_learns_from_the_reward_source_scoring_each_rollout_once(make_pipeline: Any) -> None:
    """The reward source pays for the action the environment does not reward: PPO learns that one."""
    reward = ScriptedReward(lambda batch: 1.0 - batch.env_rewards)
    ppo = build(make_pipeline(num_envs=8, reward=reward), n_epochs=4, batch_size=32, learning_rate=3e-3, ent_coef=0.0)
    for iteration in range(15):
        ppo.iterate()
        assert len(reward.batches) == iteration + 1 and len(reward.batches[-1]) == 8 * 8
    observations = {"vector": np.zeros((2, 4), np.float32), "text": ("go left", "go right")}
    assert ppo.act(observations).tolist() == [1, 0]
