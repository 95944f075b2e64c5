"""Pipelined sampling (env.vectorization: pipelined): the lag bound, learning with text, segments, shutdown, resume."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.rl import distributions
from polyfuse.sampling import PipelinedSampler
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer
from sampling_helpers import DIGITS, alive, children, runner_config_data, train_digits_vqa_with_text, wait_gone


def config(output_dir: Path, **options: Any) -> PipelineConfig:
    """DigitsVQA, pipelined (:func:`sampling_helpers.runner_config_data`'s options)."""
    return validate_pipeline(runner_config_data(output_dir, "pipelined", **options))


# --- config ---------------------------------------------------------------------------------------


def test_workers_need_pipelined_and_enough_envs(tmp_path: Path) -> None:
    base = config(tmp_path).model_dump(mode="json")
    with pytest.raises(ConfigError, match="vectorization: pipelined"):
        validate_pipeline({**base, "env": {"id": DIGITS, "workers": 2}})
    with pytest.raises(ConfigError, match="exceeds num_envs"):
        validate_pipeline({**base, "env": {"id": DIGITS, "num_envs": 2, "vectorization": "pipelined", "workers": 3}})


def test_an_optimizer_that_steps_envs_itself_is_refused(tmp_path: Path) -> None:
    bad = config(tmp_path, workers=1).model_dump(mode="json")
    bad["optimizer"] = {"name": "dqn", "params": {}}
    with pytest.raises(PolyfuseError, match="on-policy optimizers"):
        Trainer(validate_pipeline(bad), progress=False).run()


def test_a_policy_with_memory_is_refused(tmp_path: Path) -> None:
    """Workers act without the learner's memory state, so they would act as another policy than the one learning."""
    bad = config(tmp_path, workers=1).model_dump(mode="json")
    bad["optimizer"]["params"]["memory"] = 16
    with pytest.raises(PolyfuseError, match="optimizer.params.memory: ppo's env runners"):
        Trainer(validate_pipeline(bad), progress=False).run()


# --- the lag bound, the rollout layout, segments -------------------------------------------------


@pytest.fixture
def pipelined_ppo(tmp_path: Path) -> Any:
    """A PPO whose pipeline's envs are a PipelinedSampler of 2 workers recording whole episodes as segments."""
    from polyfuse.network import NetworkFactory
    from polyfuse.registry import default_registry
    from polyfuse.rewards import EnvReward
    from polyfuse.training import Pipeline
    from polyfuse_ppo.plugin import PPOConfig
    from polyfuse_ppo.ppo import PPO

    run_config = config(tmp_path)
    sampler = PipelinedSampler(run_config, seed=3, segment_length=0)
    try:
        factory = NetworkFactory(run_config, sampler.single_observation_space, default_registry())
        ppo = PPO(PPOConfig(n_steps=8, n_epochs=2, batch_size=16, learning_rate=0.01, hidden_sizes=[64],
                            activation="relu"))
        ppo.setup(Pipeline(factory, 3, sampler.single_observation_space, sampler.single_action_space, sampler,
                           EnvReward()))
        yield ppo, sampler
    finally:
        sampler.close()


def behaviour_log_probs(ppo: Any, state: dict[str, torch.Tensor], rollout: Any) -> torch.Tensor:
    """The rollout's actions' log-probabilities under the actor-critic with weights ``state``."""
    model = copy.deepcopy(ppo.model)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.logits(rollout.observations.all())
    return distributions.log_prob(logits, rollout.actions, ppo.layout.nvec)


def test_workers_act_with_the_weights_exactly_one_update_old(pipelined_ppo: Any) -> None:
    ppo, sampler = pipelined_ppo
    weights: list[dict[str, torch.Tensor]] = []  # weights[k]: the learner's before update k
    rollouts = []
    learn = ppo._update

    def record(rollout: Any) -> dict[str, float]:
        weights.append(copy.deepcopy(ppo.model.state_dict()))
        rollouts.append(rollout)
        return learn(rollout)

    ppo._update = record
    lags = [ppo.iterate()["policy_lag"] for _ in range(5)]
    assert lags == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert sampler.lag == 1 and sampler.behaviour_version == sampler.published - 1
    assert torch.allclose(behaviour_log_probs(ppo, weights[0], rollouts[0]), rollouts[0].log_probs, atol=1e-5)
    for k in range(2, 5):  # rollout k was collected with the weights before update k - 1 ...
        stored = rollouts[k].log_probs
        assert torch.allclose(behaviour_log_probs(ppo, weights[k - 1], rollouts[k]), stored, atol=1e-5)
        # ... and not with the learner's current ones, nor with older ones: the lag is one update, no more
        assert not torch.allclose(behaviour_log_probs(ppo, weights[k], rollouts[k]), stored, atol=1e-3)
        assert not torch.allclose(behaviour_log_probs(ppo, weights[k - 2], rollouts[k]), stored, atol=1e-3)


def test_ppo_clips_lagged_rollouts_around_the_learners_policy(pipelined_ppo: Any) -> None:
    """lag_correction: decoupled (the default): proximal log-probs from the learner's weights at the update's start."""
    ppo, _ = pipelined_ppo
    seen: list[tuple[dict[str, torch.Tensor], Any, torch.Tensor | None]] = []
    proximal_of = ppo._proximal_log_probs

    def record(rollout: Any) -> torch.Tensor | None:
        proximal = proximal_of(rollout)
        seen.append((copy.deepcopy(ppo.model.state_dict()), rollout, proximal))
        return proximal

    ppo._proximal_log_probs = record
    metrics = [ppo.iterate() for _ in range(3)]
    assert seen[0][2] is None and "behaviour_weight" not in metrics[0]  # the first rollout is on-policy
    for (state, rollout, proximal), record_ in zip(seen[1:], metrics[1:]):
        assert proximal is not None
        torch.testing.assert_close(proximal, behaviour_log_probs(ppo, state, rollout), atol=1e-5, rtol=0)
        assert not torch.allclose(proximal, rollout.log_probs, atol=1e-3)  # the behaviour policy is one update old
        weights = (proximal - rollout.log_probs).exp()  # no cap by default
        assert record_["behaviour_weight"] == pytest.approx(weights.mean().item())
        assert record_["behaviour_weight_max"] == pytest.approx(weights.max().item())

    ppo.config = ppo.config.model_copy(update={"lag_correction": "ratio"})
    assert "behaviour_weight" not in ppo.iterate() and seen[-1][2] is None


def test_rollouts_episodes_and_segments_reach_the_learner_in_env_order(pipelined_ppo: Any) -> None:
    ppo, sampler = pipelined_ppo
    ppo.iterate()
    ppo.iterate()
    assert ppo.env_steps == sampler.env_steps == 2 * 8 * 8
    episodes = sampler.pop_episodes()
    assert len(episodes) == 2 * 8 * 8  # DigitsVQA: one step per episode
    segments = sampler.pop_segments()
    assert len(segments) == 2 * 8 * 8 and {len(segment) for segment in segments} == {1}
    assert sorted({segment.env_index for segment in segments}) == list(range(8))  # worker 1's envs are 4..7
    assert {"image", "question"} <= set(segments[0].observations)
    assert all(isinstance(text, str) for text in segments[0].observations["question"])
    with pytest.raises(PolyfuseError, match="on-policy"):
        sampler.step(np.zeros(8, dtype=np.int64))


# --- training: learning with text, A2C, shutdown, resume ------------------------------------------


@pytest.mark.slow  # 4096 steps of real training; three processes (learner, two workers) load a sentence-transformer
def test_pipelined_ppo_learns_digits_vqa_with_text(tmp_path: Path) -> None:
    train_digits_vqa_with_text(tmp_path, "pipelined")


def test_pipelined_a2c_trains(tmp_path: Path) -> None:
    summary = Trainer(config(tmp_path, optimizer="a2c", workers=1, total_steps=512), progress=False).run()
    assert summary["steps"] == 512 and summary["episodes"] == 512


def test_sigterm_saves_a_checkpoint_leaves_no_workers_and_the_run_resumes(tmp_path: Path) -> None:
    run = config(tmp_path / "run", total_steps=400_000)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(run.model_dump(mode="json")), encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:
        process = subprocess.Popen([sys.executable, "-m", "polyfuse", "run", str(path)], stderr=stderr_file)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and '"train"' in metrics.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        workers = children(process.pid)
        assert len(workers) >= 2
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = log.read_text()
    assert "stopped by SIGTERM" in stderr, stderr[-2000:]
    assert wait_gone(workers) == []
    stopped = max(r["step"] for r in read_metrics(metrics))
    resumed = config(tmp_path / "run", total_steps=stopped + 256)
    summary = Trainer(resumed, resume=True, progress=False).run()
    assert summary["steps"] >= stopped + 256


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import json, sys, time
        from polyfuse.config import validate_pipeline
        from polyfuse.sampling import PipelinedSampler
        config = validate_pipeline(json.loads(sys.argv[1]))
        sampler = PipelinedSampler(config, seed=0)
        print(json.dumps(sampler.pids), flush=True)
        time.sleep(600)
    """)
    run = json.dumps(config(tmp_path).model_dump(mode="json"))
    parent = subprocess.Popen([sys.executable, "-c", script, run], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        workers = json.loads(parent.stdout.readline())
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    assert wait_gone(workers) == []


def test_a_worker_that_draws_a_progress_bar_leaks_no_semaphore(tmp_path: Path) -> None:
    """Workers end with os._exit: a tqdm bar (a model loader's) must not leave the learner's tracker a semaphore."""
    script = tmp_path / "bar_in_worker.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, sys

        def child():
            from polyfuse.sampling.process_worker import progress_bars_with_a_thread_lock
            progress_bars_with_a_thread_lock()
            import tqdm
            for _ in tqdm.tqdm(range(3), file=sys.stderr):
                pass
            os._exit(0)

        if __name__ == "__main__":
            process = multiprocessing.get_context("spawn").Process(target=child)
            process.start()
            process.join()
            sys.exit(process.exitcode)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stderr  # the bar was drawn
    assert "leaked semaphore" not in result.stderr
