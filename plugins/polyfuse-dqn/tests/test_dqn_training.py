"""The optimizer end to end: learning, rewards, determinism, checkpoints, acting and the RLOptimizer contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.rl.testing import ScriptedReward
from polyfuse.training import Budget, Pipeline, Progress, RLOptimizer, TrackedVectorEnv
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse_dqn.dqn import DQN
from polyfuse_dqn.plugin import DQNConfig

FAST = dict(learning_starts=64, batch_size=32, learning_rate=1e-3, target_update_interval=50, gamma=0.9,
            hidden_sizes=[32], exploration_fraction=0.5, exploration_steps=2_000)


def greedy_success(dqn: DQN, helpers, env: str, episodes: int = 256, **kwargs) -> float:
    """Greedy success rate on episodes the training never saw (another seed)."""
    envs = helpers.make_vector_env(env, 16, seed=12_345, **kwargs).envs
    observations, _ = envs.reset()
    outcomes: list[bool] = []
    while len(outcomes) < episodes:
        observations, rewards, terminated, truncated, _ = envs.step(dqn.act(observations, deterministic=True))
        outcomes += [bool(terminated[i] and rewards[i] > 0) for i in np.flatnonzero(terminated | truncated)]
    envs.close()
    return float(np.mean(outcomes[:episodes]))


def test_learns_the_text_bandit(make_pipeline, helpers) -> None:
    """The rewarded action is named only by the text; the vector is noise."""
    iterations = 300
    dqn = DQN(DQNConfig(**{**FAST, "exploration_steps": 4 * iterations}))
    dqn.setup(make_pipeline("bandit", num_envs=4, seed=0, num_words=4))
    assert greedy_success(dqn, helpers, "bandit", num_words=4) < 0.5  # untrained: about chance (1/4)
    for _ in range(iterations):
        metrics = dqn.iterate()
    assert greedy_success(dqn, helpers, "bandit", num_words=4) > 0.9
    assert 0.5 < metrics["q_mean"] < 1.5  # a one-step return of 1 for the right action
    assert metrics["epsilon"] == pytest.approx(0.05)


def test_learns_a_multi_step_task_with_n_step_returns(make_pipeline, helpers) -> None:
    """Three correct presses; reward only at the end, so values must bootstrap."""
    iterations = 700
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 128, "exploration_steps": 4 * iterations}, n_step=3))
    dqn.setup(make_pipeline("chain", num_envs=4, seed=0))
    for _ in range(iterations):
        dqn.iterate()
    assert greedy_success(dqn, helpers, "chain") > 0.9
    start = {"vector": np.array([[1, 0, 0, 0]], dtype=np.float32), "text": ("press red",)}
    q_values = dqn.action_logits(start).detach()[0]
    assert q_values.argmax() == 0
    assert abs(float(q_values[0]) - 0.9**2) < 0.2  # reward 1 two steps after the first correct press


@pytest.mark.parametrize("n_step", [1, 3])
def test_stored_transitions_end_in_their_own_episode(make_pipeline, n_step) -> None:
    """Next observations come from the same episode: the final observation, never the next episode's first."""
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 10_000}, n_step=n_step))
    dqn.setup(make_pipeline("chain", num_envs=4, seed=1, length=2, max_steps=3))
    for _ in range(60):
        dqn.iterate()
    stored = dqn.replay.gather(np.arange(len(dqn.replay)))
    assert stored.terminated.any() and not stored.terminated.all()
    # positions never fall within an episode: a next observation is never the next episode's start
    position, next_position = (stored.observations["vector"].argmax(1),
                               stored.next_observations["vector"].argmax(1))
    assert (next_position >= position).all() and (next_position > 0).any()
    # a terminated transition ends at the goal (position 2), where no episode starts
    assert (stored.next_observations["vector"][stored.terminated, 2] == 1).all()
    if n_step > 1:  # time limits cut n-step sums short without stopping the bootstrap
        assert (~stored.terminated & (stored.horizons < n_step)).any()


def run(make_pipeline, seed: int, iterations: int = 30, **overrides) -> tuple[list[dict], list[torch.Tensor]]:
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 16, **overrides}))
    dqn.setup(make_pipeline("chain", num_envs=3, seed=seed))
    metrics = [dqn.iterate() for _ in range(iterations)]
    return metrics, [p.detach().clone() for p in dqn.q_network.parameters()]


def test_same_seed_same_run(make_pipeline) -> None:
    metrics_a, params_a = run(make_pipeline, seed=4, n_step=2)
    metrics_b, params_b = run(make_pipeline, seed=4, n_step=2)
    assert metrics_a == metrics_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    metrics_c, params_c = run(make_pipeline, seed=5, n_step=2)
    assert not all(torch.equal(a, b) for a, b in zip(params_a, params_c))


def test_the_seed_does_not_depend_on_global_torch_randomness(make_pipeline) -> None:
    torch.manual_seed(1)
    _, params_a = run(make_pipeline, seed=4, iterations=1)
    torch.manual_seed(2)
    _, params_b = run(make_pipeline, seed=4, iterations=1)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


@pytest.mark.parametrize("overrides", [{}, {"buffer_size": 50, "double_dqn": False, "tau": 0.1,
                                           "target_update_interval": 1, "gradient_steps": 2}])
def test_resuming_from_a_checkpoint_continues_exactly(make_pipeline, helpers, tmp_path, overrides) -> None:
    """Save, continue; restore into a fresh optimizer, continue: the same parameters, metrics and buffer.

    Environments are not part of an optimizer's state, so the resumed run
    gets an exact copy of them (``frozen_copy``).
    """
    config = DQNConfig(**{**FAST, "learning_starts": 16, **overrides})
    original = DQN(config)
    pipeline = make_pipeline("chain", num_envs=3, seed=7)
    original.setup(pipeline)
    for _ in range(40):  # past learning_starts; the 50-transition buffer has wrapped
        original.iterate()
    save_checkpoint(tmp_path, {"optimizer": original.state_dict()})
    environments = pipeline.envs.envs.snapshot()
    continued = [original.iterate() for _ in range(5)]

    resumed = DQN(config)
    resumed.setup(helpers.pipeline_for(environments, seed=7))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint")["optimizer"])
    assert [resumed.iterate() for _ in range(5)] == continued
    for a, b in zip(original.q_network.parameters(), resumed.q_network.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(original.target_network.parameters(), resumed.target_network.parameters()):
        assert torch.equal(a, b)
    assert resumed.progress == original.progress
    assert len(resumed.replay) == len(original.replay)
    rows = np.arange(len(original.replay))
    replayed = resumed.replay.gather(rows).observations["text"]
    assert replayed == original.replay.gather(rows).observations["text"]


def test_without_the_state_the_resumed_run_differs(make_pipeline, helpers) -> None:
    """The control for the test above: a fresh optimizer on the same environments does not match."""
    config = DQNConfig(**{**FAST, "learning_starts": 16})
    original = DQN(config)
    pipeline = make_pipeline("chain", num_envs=3, seed=7)
    original.setup(pipeline)
    for _ in range(40):
        original.iterate()
    environments = pipeline.envs.envs.snapshot()
    continued = [original.iterate() for _ in range(5)]
    fresh = DQN(config)
    fresh.setup(helpers.pipeline_for(environments, seed=7))
    assert [fresh.iterate() for _ in range(5)] != continued


def test_pending_n_step_transitions_survive_a_resume(make_pipeline, helpers, tmp_path) -> None:
    config = DQNConfig(**FAST, n_step=3)
    original = DQN(config)
    original.setup(make_pipeline("chain", num_envs=2, seed=3, length=6, max_steps=20))
    for _ in range(4):
        original.iterate()
    pending = original.nstep.pending_count
    assert pending > 0
    save_checkpoint(tmp_path, {"optimizer": original.state_dict()})
    resumed = DQN(config)
    resumed.setup(make_pipeline("chain", num_envs=2, seed=99, length=6, max_steps=20))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint")["optimizer"])
    assert len(resumed.replay) == len(original.replay) + pending
    closed = resumed.replay.gather(np.arange(len(original.replay), len(resumed.replay)))
    assert not closed.terminated.any() and (closed.horizons < 3).all()  # cut like a time limit
    assert resumed.nstep.pending_count == 0


def test_the_contract(make_pipeline) -> None:
    dqn = DQN(DQNConfig(**FAST))
    assert isinstance(dqn, RLOptimizer)
    dqn.setup(make_pipeline("bandit", num_envs=4, num_words=4))
    metrics = dqn.iterate()
    assert set(metrics) == {"epsilon", "buffer_size"}  # no loss before learning_starts
    observations = {"vector": np.zeros((5, 4), np.float32), "text": ("go up",) * 5}
    actions = dqn.act(observations)
    assert actions.shape == (5,) and actions.dtype == np.int64 and len(set(actions.tolist())) == 1
    stochastic = dqn.act(observations, deterministic=False)
    assert stochastic.shape == (5,) and ((0 <= stochastic) & (stochastic < 4)).all()
    logits = dqn.action_logits(observations)
    assert logits.shape == (5, 4)
    logits.sum().backward()
    parameters = dqn.trainable_parameters()
    used = [p for name, p in dqn.q_network.named_parameters() if "placeholders" not in name]  # none missing
    assert parameters and all(p.grad is not None for p in used)
    encoder_ids = {id(p) for p in dqn.q_network.trunk.parameters()}
    assert encoder_ids <= {id(p) for p in parameters}  # warm start reaches the encoders and fuser
    assert all(not p.requires_grad for p in dqn.target_network.parameters())
    for _ in range(20):
        metrics = dqn.iterate()
    assert {"loss", "q_mean"} <= set(metrics) and metrics["buffer_size"] == 84
    assert all(isinstance(v, float) for v in metrics.values())


def test_text_given_as_a_numpy_array_works_too(make_pipeline) -> None:
    """Warm-start batches hold text as object arrays, not tuples."""
    dqn = DQN(DQNConfig(**FAST))
    dqn.setup(make_pipeline("bandit", num_envs=2))
    as_tuple = {"vector": np.zeros((2, 4), np.float32), "text": ("go up", "go left")}
    as_array = {**as_tuple, "text": np.array(as_tuple["text"], dtype=object)}
    assert torch.equal(dqn.action_logits(as_tuple), dqn.action_logits(as_array))


def test_warm_started_network_becomes_the_target(make_pipeline) -> None:
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 10_000}))
    dqn.setup(make_pipeline("bandit", num_envs=2))
    with torch.no_grad():  # what behaviour cloning does between setup and the first iterate
        for p in dqn.trainable_parameters():
            p.add_(1.0)
    dqn.iterate()
    for a, b in zip(dqn.q_network.parameters(), dqn.target_network.parameters()):
        assert torch.equal(a, b)


def test_actions_respect_the_action_space_start(make_pipeline) -> None:
    dqn = DQN(DQNConfig(**FAST))
    pipeline = make_pipeline("bandit", num_envs=4, num_words=4, action_start=5)
    dqn.setup(pipeline)
    for _ in range(30):
        metrics = dqn.iterate()
    assert "loss" in metrics  # Q-values are indexed from 0 although replay holds the environment's actions
    rows = np.arange(len(dqn.replay))
    assert set(dqn.replay.gather(rows).actions.tolist()) == {5, 6, 7, 8}
    observations, _ = pipeline.envs.reset()
    assert set(dqn.act(observations).tolist()) <= {5, 6, 7, 8}
    assert set(dqn.act(observations, deterministic=False).tolist()) <= {5, 6, 7, 8}


def test_action_probabilities_are_what_sampled_actions_are_drawn_from(make_pipeline) -> None:
    """Epsilon-greedy over the Q-values (serving reports them), not a softmax DQN never trained."""
    dqn = DQN(DQNConfig(**FAST))
    dqn.setup(make_pipeline("bandit", num_envs=4, num_words=4))
    for _ in range(100):
        dqn.iterate()
    epsilon = dqn.epsilon
    assert 0.05 < epsilon < 1
    single = {"vector": np.zeros((1, 4), np.float32), "text": ("go left",)}
    with torch.no_grad():
        probabilities = dqn.action_probabilities(dqn.action_logits(single))[0].numpy()
    greedy = int(dqn.act(single)[0])
    expected = np.full(4, epsilon / 4)
    expected[greedy] += 1 - epsilon
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    draws = 4_000
    many = {"vector": np.zeros((draws, 4), np.float32), "text": ("go left",) * draws}
    frequencies = np.bincount(dqn.act(many, deterministic=False), minlength=4) / draws
    np.testing.assert_allclose(frequencies, probabilities, atol=0.03)


class ContinuousActions(gym.Env):
    observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return {"vector": np.zeros(2, np.float32)}, {}

    def step(self, action):
        return {"vector": np.zeros(2, np.float32)}, 0.0, True, False, {}


def test_continuous_actions_are_refused_with_a_hint() -> None:
    envs = gym.vector.SyncVectorEnv([ContinuousActions], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    pipeline = Pipeline.for_envs(TrackedVectorEnv(envs), make_network=lambda: None, seed=0)
    with pytest.raises(PolyfuseError, match="Discrete action space"):
        DQN(DQNConfig()).setup(pipeline)


def test_methods_before_setup_say_so() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        DQN(DQNConfig()).iterate()


def test_a_state_of_another_format_is_refused(make_pipeline) -> None:
    dqn = DQN(DQNConfig(**FAST))
    dqn.setup(make_pipeline("bandit", num_envs=2))
    state = dqn.state_dict()
    with pytest.raises(PolyfuseError, match="format"):
        dqn.load_state_dict({**state, "format": 99})


def test_exploration_follows_the_run_budget_unless_the_config_sets_one(make_pipeline) -> None:
    config = DQNConfig(**{**FAST, "exploration_steps": None})
    with pytest.raises(PolyfuseError, match=r"needs the run's budget.*set optimizer.params.exploration_steps"):
        DQN(config).setup(make_pipeline("bandit", num_envs=2))
    in_gradient_steps = DQN(config)
    in_gradient_steps.set_budget(Budget(1_000, "gradient_steps"))
    with pytest.raises(PolyfuseError, match=r"counts gradient_steps.*set optimizer.params.exploration_steps"):
        in_gradient_steps.setup(make_pipeline("bandit", num_envs=2))
    dqn = DQN(config)
    dqn.set_budget(Budget(1_000))  # epsilon reaches its end at exploration_fraction (0.5) of 1,000 env steps
    dqn.setup(make_pipeline("bandit", num_envs=2))
    dqn.env_steps = 250
    assert dqn.epsilon == pytest.approx((1.0 + 0.05) / 2)
    dqn.env_steps = 500
    assert dqn.epsilon == pytest.approx(0.05)


def test_progress_counts_env_steps_gradient_steps_and_samples(make_pipeline) -> None:
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 16, "train_frequency": 2, "gradient_steps": 3}))
    dqn.setup(make_pipeline("bandit", num_envs=4))
    dqn.iterate()  # 8 env steps, learning not started
    assert dqn.progress == Progress(env_steps=8, gradient_steps=0, samples=0)
    dqn.iterate()
    assert dqn.progress == Progress(env_steps=16, gradient_steps=3, samples=3 * 32)


def test_td_targets_use_the_reward_source_as_it_is_when_sampled(make_pipeline) -> None:
    """A reward source that changes during the run is read at every gradient step, never from stored scores."""
    reward = ScriptedReward(lambda batch: np.full(len(batch), 0.5))
    dqn = DQN(DQNConfig(**{**FAST, "learning_starts": 16}))
    dqn.setup(make_pipeline("bandit", num_envs=4, reward=reward))  # one-step episodes: a target is its reward
    targets: list[list[float]] = []
    compute = dqn._targets
    dqn._targets = lambda batch: targets.append(compute(batch).tolist()) or compute(batch)
    for _ in range(4):
        dqn.iterate()
    assert targets[-1] == [0.5] * 32
    reward.rule = lambda batch: np.where(batch.env_rewards > 0, -2.0, 3.0)  # the reward model learnt something
    dqn.iterate()
    assert targets[-1] == np.where(reward.batches[-1].env_rewards > 0, -2.0, 3.0).tolist()
    assert set(targets[-1]) == {-2.0, 3.0}
    stored = dqn.replay.gather(np.arange(len(dqn.replay)))
    assert set(stored.rewards.tolist()) == {0.0, 1.0}  # replay keeps the environment's rewards


def test_n_step_returns_are_refused_with_a_reward_source_that_changes(make_pipeline) -> None:
    reward = ScriptedReward(lambda batch: batch.env_rewards)
    with pytest.raises(PolyfuseError, match=r"optimizer.params.n_step is 3.*Set optimizer.params.n_step: 1"):
        DQN(DQNConfig(**FAST, n_step=3)).setup(make_pipeline("chain", reward=reward))
