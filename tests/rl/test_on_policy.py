"""OnPolicyAlgorithm and the Algorithm scaffolding under it, through the shortest subclass: a policy gradient.

``PolicyGradient`` is what an on-policy plugin writes: a name and an update.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from polyfuse.errors import PolyfuseError
from polyfuse.rl import distributions, on_policy
from polyfuse.rl.advantages import normalize, value_loss
from polyfuse.rl.configs import OnPolicyConfig
from polyfuse.rl.on_policy import OnPolicyAlgorithm, Rollout
from polyfuse.rl.testing import ScriptedReward
from polyfuse.training import Budget, Pipeline, Progress, RLOptimizer
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint


class PolicyGradient(OnPolicyAlgorithm):
    """Advantage actor-critic: one gradient step on the whole rollout."""

    name = "pg"

    def _update(self, rollout: Rollout) -> dict[str, float]:
        logits, values = self.model(rollout.observations.all())
        log_probs = distributions.log_prob(logits, rollout.actions, self.layout.nvec)
        policy_loss = -(log_probs * normalize(rollout.advantages)).mean()
        fit = value_loss(values, rollout.returns)
        self._descend(policy_loss + self.config.vf_coef * fit, rollout.size)
        return {"policy_loss": policy_loss.item(), "value_loss": fit.item()}


SMALL = {"n_steps": 8, "learning_rate": 1e-2, "hidden_sizes": [16], "ent_coef": 0.0}


def build(pipeline: Pipeline, **params: Any) -> PolicyGradient:
    algorithm = PolicyGradient(OnPolicyConfig(**{**SMALL, **params}))
    algorithm.setup(pipeline)
    return algorithm


def test_progress_counts_env_steps_gradient_steps_samples_and_iterations(make_pipeline) -> None:
    algorithm = build(make_pipeline("chain", num_envs=4))
    assert isinstance(algorithm, RLOptimizer) and algorithm.progress == Progress(0, 0, 0)
    for _ in range(3):
        algorithm.iterate()
    assert algorithm.progress == Progress(env_steps=3 * 8 * 4, gradient_steps=3, samples=3 * 8 * 4)
    assert algorithm.iterations == 3


def test_the_whole_rollout_is_scored_in_one_call_and_its_rewards_are_learnt(make_pipeline) -> None:
    """The reward source pays for the action the environment does not reward: the policy learns that one."""
    reward = ScriptedReward(lambda batch: 1.0 - batch.env_rewards)
    pipeline = make_pipeline("bandit", num_envs=8, reward=reward)
    algorithm = build(pipeline)
    rollouts: list[Rollout] = []
    update = algorithm._update
    algorithm._update = lambda rollout: rollouts.append(rollout) or update(rollout)
    for iteration in range(30):
        algorithm.iterate()
        assert len(reward.batches) == iteration + 1, "one score() call per rollout"
    last = reward.batches[-1]
    assert len(last) == 8 * 8 and last.actions.shape == (64,) and last.observations["vector"].shape == (64, 4)
    assert len(last.observations["text"]) == 64 and last.terminated.all()  # one-step episodes
    torch.testing.assert_close(rollouts[-1].rewards, torch.from_numpy(1.0 - last.env_rewards))
    observations = {"vector": np.zeros((2, 4), np.float32), "text": ("go left", "go right")}
    assert algorithm.act(observations).tolist() == [1, 0]  # the reward source's choice, not the environment's
    assert np.mean([e.success for e in pipeline.envs.pop_episodes()[-64:]]) < 0.2


def test_truncated_steps_bootstrap_from_the_final_observation(make_pipeline, monkeypatch) -> None:
    captured: dict[str, Any] = {}
    finals: list[dict[str, Any]] = []
    compute_gae, stack = on_policy.compute_gae, on_policy.stack

    def capture_gae(*args: Any) -> Any:
        captured["args"] = args  # the rollout is over, the update not begun: values are the rollout's
        with torch.no_grad():
            captured["expected"] = [captured["algorithm"].model.value(final) for final in finals]
        return compute_gae(*args)

    def capture_stack(samples: Any) -> Any:
        finals.append(stack(samples))
        return finals[-1]

    monkeypatch.setattr(on_policy, "compute_gae", capture_gae)
    monkeypatch.setattr(on_policy, "stack", capture_stack)
    algorithm = captured["algorithm"] = build(make_pipeline("chain", max_steps=1), n_steps=3)  # all truncated
    algorithm.iterate()
    terminated, truncated, _, final_values = captured["args"][2:6]
    assert truncated.all() and not terminated.any()
    assert len(finals) == 3
    for t in range(3):
        # The final observation (position after the press), not the reset one that follows it.
        torch.testing.assert_close(final_values[t], captured["expected"][t])
    moved = np.concatenate([f["vector"][:, 1] for f in finals])
    assert moved.any()  # some presses were right: their final obs are at position 1, resets are at 0


@pytest.mark.parametrize(("unit", "total", "expected"), [
    ("env_steps", 4 * 32, [0.01, 0.0075, 0.005, 0.0025, 0.0]),  # 32 env steps per iterate
    ("gradient_steps", 2, [0.01, 0.005, 0.0, 0.0, 0.0]),  # one gradient step per iterate
])
def test_linear_schedule_anneals_over_the_budget_in_its_unit(make_pipeline, unit, total, expected) -> None:
    algorithm = build(make_pipeline(), lr_schedule="linear")
    algorithm.set_budget(Budget(total, unit))
    assert [algorithm.iterate()["learning_rate"] for _ in range(5)] == pytest.approx(expected)
    assert algorithm.adam.param_groups[0]["lr"] == 0.0


def test_a_schedule_without_a_budget_says_how_to_fix_it(make_pipeline) -> None:
    algorithm = build(make_pipeline(), lr_schedule="linear")
    with pytest.raises(PolyfuseError, match=r"set_budget\(\).*lr_schedule: constant"):
        algorithm.iterate()
    assert build(make_pipeline()).iterate()["learning_rate"] == SMALL["learning_rate"]  # constant needs none


def run(pipeline: Pipeline, iterations: int) -> PolicyGradient:
    algorithm = build(pipeline)
    for _ in range(iterations):
        algorithm.iterate()
    return algorithm


def parameters(algorithm: PolicyGradient) -> list[torch.Tensor]:
    return [p.detach().clone() for p in algorithm.model.parameters()]


def test_the_seed_alone_decides_the_run(make_pipeline) -> None:
    torch.manual_seed(1)
    first = parameters(run(make_pipeline("chain", seed=3), 2))
    torch.manual_seed(2)
    again = parameters(run(make_pipeline("chain", seed=3), 2))
    other = parameters(run(make_pipeline("chain", seed=4), 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_a_checkpoint_restores_progress_generators_and_networks(helpers, tmp_path) -> None:
    envs = helpers.make_vector_env("chain", num_envs=3, seed=5, max_steps=4)
    original = run(helpers.pipeline_for(envs, seed=11), 2)
    save_checkpoint(tmp_path, original.state_dict())
    paused = envs.snapshot()
    continued = [original.iterate() for _ in range(2)]

    resumed = build(helpers.pipeline_for(paused, seed=999))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint"))
    assert resumed.progress == Progress(2 * 24, 2, 2 * 24) and resumed.iterations == 2
    assert [resumed.iterate() for _ in range(2)] == continued
    assert all(torch.equal(a, b) for a, b in zip(parameters(original), parameters(resumed)))
    with pytest.raises(PolyfuseError, match="format 99.*pg plugin"):
        resumed.load_state_dict({**original.state_dict(), "format": 99})


def test_what_cannot_be_trained_is_refused_with_the_fix(make_pipeline, helpers) -> None:
    with pytest.raises(RuntimeError, match="setup"):
        PolicyGradient(OnPolicyConfig()).iterate()
    envs = make_pipeline().envs
    with pytest.raises(PolyfuseError, match="env: {id"):
        build(Pipeline(lambda: None, 0, envs.single_observation_space, envs.single_action_space))
    with pytest.raises(PolyfuseError, match="Pipeline.for_envs"):
        build(Pipeline(lambda: None, 0, envs.single_observation_space, envs.single_action_space, envs))
    next_step = SyncVectorEnv([helpers.WordBandit], autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(PolyfuseError, match="SAME_STEP"):
        build(helpers.pipeline_for(next_step))

    class BoxActions(helpers.WordBandit):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = gym.spaces.Box(-1, 1, (2,))

    box = SyncVectorEnv([BoxActions], autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(PolyfuseError, match="pg supports Discrete and MultiDiscrete"):
        build(helpers.pipeline_for(box))


def test_a_reward_source_must_score_every_transition(make_pipeline) -> None:
    algorithm = build(make_pipeline(reward=ScriptedReward(lambda batch: np.zeros(3))))
    with pytest.raises(PolyfuseError, match=r"ScriptedReward scored 32 transitions.*shape \(32,\)"):
        algorithm.iterate()
