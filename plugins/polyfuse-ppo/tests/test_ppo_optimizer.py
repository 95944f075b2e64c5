"""The optimizer's behaviour around the update: schedules, early stop, acting, rollouts and refusals."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import polyfuse_ppo.ppo as ppo_module
from polyfuse.errors import PolyfuseError
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
    assert ppo.num_timesteps == 8 * 4 and ppo.envs.total_steps == 8 * 4
    assert set(build(make_pipeline("chain"), kl_coef=0.1).iterate()) == METRICS | {"kl_to_reference"}


def test_linear_schedule_anneals_to_zero_over_total_steps(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(), lr_schedule="linear", total_steps=4 * 32, learning_rate=0.01)  # 4 iterations
    rates = [ppo.iterate()["learning_rate"] for _ in range(5)]
    assert rates == pytest.approx([0.01, 0.0075, 0.005, 0.0025, 0.0])
    assert ppo.adam.param_groups[0]["lr"] == 0.0


def test_linear_schedule_takes_the_budget_from_the_trainer_when_not_configured(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(), lr_schedule="linear", learning_rate=0.01)
    with pytest.raises(PolyfuseError, match="total_steps"):
        ppo.iterate()
    ppo.set_total_steps(64)
    assert [ppo.iterate()["learning_rate"] for _ in range(2)] == pytest.approx([0.01, 0.005])
    configured = build(make_pipeline(), lr_schedule="linear", learning_rate=0.01, total_steps=128)
    configured.set_total_steps(64)  # the config's explicit budget wins
    assert configured.current_learning_rate() == 0.01 and configured.total_steps == 128


def test_constant_schedule_keeps_the_rate(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(), learning_rate=0.02)
    assert [ppo.iterate()["learning_rate"] for _ in range(3)] == [0.02] * 3


def test_target_kl_stops_the_epochs_early(make_pipeline: Any) -> None:
    ppo = build(make_pipeline(num_envs=8), target_kl=1e-6, n_epochs=10, learning_rate=0.05, batch_size=16)
    metrics = ppo.iterate()
    assert metrics["early_stopped"] == 1.0
    assert metrics["gradient_steps"] < 10 * 4
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


def test_truncated_steps_bootstrap_from_the_final_observation(make_pipeline: Any, monkeypatch: Any) -> None:
    captured: dict[str, Any] = {}
    finals: list[dict[str, Any]] = []
    compute_gae, stack = ppo_module.PF.compute_gae, ppo_module.stack

    def capture_gae(*args: Any) -> Any:
        captured["args"] = args  # the rollout is over, the update not begun: values are the rollout's
        with torch.no_grad():
            captured["expected"] = [captured["ppo"].model.value(final) for final in finals]
        return compute_gae(*args)

    def capture_stack(samples: Any) -> Any:
        finals.append(stack(samples))
        return finals[-1]

    monkeypatch.setattr(ppo_module.PF, "compute_gae", capture_gae)
    monkeypatch.setattr(ppo_module, "stack", capture_stack)
    ppo = captured["ppo"] = build(make_pipeline("chain", max_steps=1), n_steps=3)  # all truncated at once
    ppo.iterate()
    rewards, values, terminated, truncated, last_values, final_values = captured["args"][:6]
    assert truncated.all() and not terminated.any()
    assert len(finals) == 3
    for t in range(3):
        # The final observation (position after the press), not the reset one that follows it.
        torch.testing.assert_close(final_values[t], captured["expected"][t])
    moved = np.concatenate([f["vector"][:, 1] for f in finals])
    assert moved.any()  # some presses were right: their final obs are at position 1, resets are at 0


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


def test_refuses_what_it_cannot_train(make_pipeline: Any, helpers: Any) -> None:
    class BoxActions(helpers.WordBandit):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = gym.spaces.Box(-1, 1, (2,))

    box = SyncVectorEnv([BoxActions], autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(PolyfuseError, match="Discrete and MultiDiscrete"):
        build(helpers.pipeline_for(box))
    next_step = SyncVectorEnv([helpers.WordBandit], autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(PolyfuseError, match="SAME_STEP"):
        build(helpers.pipeline_for(next_step))
    with pytest.raises(RuntimeError, match="setup"):
        PPO(PPOConfig()).iterate()
