"""The trainer in-process: same seed same result, warm start, metrics and plot, resume checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest

import polyfuse
from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.training import Pipeline, Progress, RLOptimizer
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer


def digits_config(output_dir: Path, **trainer: Any) -> PipelineConfig:
    """A small DigitsVQA pipeline: enough to exercise the mechanics in seconds."""
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 64}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 32, "activation": "relu"}},
        "trainer": {"total_steps": 1024, "eval_every": 512, "eval_episodes": 64, "checkpoint_every": 512,
                    "output_dir": str(output_dir), **trainer},
    })


TIMINGS = {"wall_time_s", "steps_per_second", "train_time_s", "train_steps_per_second", "env_time_s", "paths"}


def without_timings(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def test_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    first = Trainer(digits_config(tmp_path / "a"), progress=False).run()
    second = Trainer(digits_config(tmp_path / "b"), progress=False).run()
    assert without_timings(first) == without_timings(second)
    assert first["steps"] >= 1024 and first["eval"]["episodes"] == 64
    assert 0 < first["train_time_s"] < first["wall_time_s"], "training time leaves out set-up and evaluation"
    assert first["train_steps_per_second"] > first["steps_per_second"]
    assert 0 < first["env_time_s"] < first["train_time_s"], "the environments' share of training"

    def curve(run: str) -> list[tuple[Any, ...]]:
        return [(r["kind"], r["step"], r.get("train/return"), r.get("eval/success"))
                for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert curve("a") == curve("b")


def test_outputs_metrics_plot_and_summary(tmp_path: Path) -> None:
    summary = Trainer(digits_config(tmp_path), progress=False).run()
    records = read_metrics(tmp_path / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals][0] == 0 and evals[-1]["step"] == summary["steps"]
    train = [r for r in records if r["kind"] == "train"]
    assert train and all(r["steps_per_second"] > 0 for r in train)
    assert any(key.startswith("optimizer/") for key in train[-1])
    assert any(key.startswith("cache/") for key in train[-1])  # the frozen sbert's feature cache
    assert 0 <= train[-1]["train/success"] <= 1
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").is_file()


def test_warm_start_clones_the_babyai_bot_before_rl(tmp_path: Path) -> None:
    config = validate_pipeline({
        "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 8},
        "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"mode": "grid"}}},
                       "mission": {"encoder": "sbert"}, "direction": {"encoder": "onehot"}},
        "fuser": {"name": "concat", "params": {"output_dim": 64}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 8, "activation": "relu"}},
        "trainer": {"total_steps": 64, "eval_episodes": 50, "output_dir": str(tmp_path),
                    "warm_start": {"episodes": 500, "epochs": 10, "learning_rate": 0.002}},
    })
    Trainer(config, progress=False).run()
    records = read_metrics(tmp_path / "metrics.jsonl")
    warm = next(r for r in records if r["kind"] == "warm_start")
    assert warm["warm_start/samples"] > 500 and warm["warm_start/accuracy"] > 0.7  # majority action: 0.56
    first_eval = next(r for r in records if r["kind"] == "eval")
    assert first_eval["step"] == 0 and first_eval["eval/success"] > 0.3  # untrained: about 0.06


def test_resume_continues_and_refuses_a_changed_config(tmp_path: Path) -> None:
    Trainer(digits_config(tmp_path, total_steps=512), progress=False).run()
    longer = Trainer(digits_config(tmp_path, total_steps=1024), resume=True, progress=False).run()
    assert longer["steps"] >= 1024
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))
    changed = digits_config(tmp_path, total_steps=2048, seed=1)
    with pytest.raises(PolyfuseError, match=r"config changed since the checkpoint \(trainer\.seed\)"):
        Trainer(changed, resume=True, progress=False).run()
    with pytest.raises(PolyfuseError, match="nothing to resume"):
        Trainer(digits_config(tmp_path / "empty"), resume=True, progress=False).run()


def test_dqn_trains_through_the_same_trainer(tmp_path: Path) -> None:
    config = validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": "concat",
        "optimizer": {"name": "dqn", "params": {"learning_starts": 128}},
        "trainer": {"total_steps": 512, "eval_every": 256, "eval_episodes": 32, "output_dir": str(tmp_path)},
    })
    summary = Trainer(config, progress=False).run()
    assert summary["steps"] >= 512 and summary["optimizer"] == "dqn"


class IdleOptimizer(RLOptimizer):
    """An optimizer whose iterate() does nothing: the run must stop with an error, not loop forever."""

    def setup(self, pipeline: Pipeline) -> None:
        self.action_space = pipeline.action_space

    def iterate(self) -> dict[str, float]:
        return {}

    @property
    def progress(self) -> Progress:
        return Progress()

    def act(self, observations: Any, deterministic: bool = True) -> np.ndarray:
        return np.zeros(len(next(iter(observations.values()))), dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {}


class IdlePlugin:
    @polyfuse.hookimpl
    def register_optimizers(self, register: Any) -> None:
        register("test-idle", lambda config: IdleOptimizer(), config=polyfuse.ComponentConfig)


def test_an_optimizer_that_makes_no_progress_is_stopped_with_a_clear_error(make_registry: Any, tmp_path: Path) -> None:
    registry = make_registry(IdlePlugin())
    config = validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 4},
        "modalities": {"image": {"encoder": "small-cnn"}},
        "fuser": "concat",
        "optimizer": "test-idle",
        "trainer": {"total_steps": 64, "eval_episodes": 4, "output_dir": str(tmp_path)},
    }, registry)
    with pytest.raises(PolyfuseError, match="'test-idle' made no progress in one iterate"):
        Trainer(config, registry, progress=False).run()


def test_a_pipeline_needs_an_env_or_a_dataset() -> None:
    with pytest.raises(ConfigError, match="needs an env, a dataset, or both"):
        validate_pipeline({"modalities": {"image": {"encoder": "small-cnn"}}, "fuser": "concat",
                           "optimizer": "dqn"})


def test_an_env_optimizer_without_an_env_is_told_to_add_one(tmp_path: Path) -> None:
    from polyfuse.datasets import write_preferences
    from polyfuse.envs.digits_vqa import observation_space

    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    write_preferences(tmp_path / "pairs", {"image": images, "question": ("is it even?", "what digit is this?")},
                      np.array([0, 1]), np.array([1, 0]), observation_space(), gymnasium.spaces.Discrete(12))
    config = validate_pipeline({
        "dataset": {"name": "preferences", "params": {"path": str(tmp_path / "pairs")}},
        "modalities": {"image": {"encoder": "small-cnn"}},
        "fuser": "concat",
        "optimizer": "dqn",
        "trainer": {"total_steps": 64, "output_dir": str(tmp_path / "run")},
    })
    with pytest.raises(PolyfuseError, match=r"env: optimizer 'dqn' learns by stepping an environment"):
        Trainer(config, progress=False).run()


def test_a_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path: Path) -> None:
    from polyfuse.training.trainer import check_resumable

    current = digits_config(tmp_path).model_dump(mode="json")
    older = copy.deepcopy(current)  # written by a polyfuse whose PPO and trainer lacked these options
    del older["optimizer"]["params"]["lag_correction"], older["trainer"]["promotion"]
    check_resumable(older, current, tmp_path)
    older["optimizer"]["params"]["n_steps"] = 64  # a real change is still refused
    with pytest.raises(PolyfuseError, match=r"config changed since the checkpoint \(optimizer\.params\.n_steps\)"):
        check_resumable(older, current, tmp_path)


def test_an_unchanged_config_resumes_when_one_validation_leaves_a_default_unfilled(tmp_path: Path) -> None:
    """preference-model's default feedback source gets its params on a second validation, not the first."""
    from polyfuse.config import load_pipeline
    from polyfuse.training.trainer import check_resumable

    pytest.importorskip("polyfuse_feedback")
    example = Path(__file__).resolve().parents[1] / "examples" / "continuous_retraining" / "finetune.yaml"
    config = load_pipeline(example).model_dump(mode="json")
    check_resumable(config, copy.deepcopy(config), tmp_path)
    changed = copy.deepcopy(config)
    changed["reward"]["params"]["feedback"][0]["params"]["error_rate"] = 0.1
    with pytest.raises(PolyfuseError, match=r"config changed since the checkpoint \(reward\.params\.feedback\)"):
        check_resumable(config, changed, tmp_path)


def test_a_ray_run_may_resume_on_another_cluster_but_not_with_other_runners(tmp_path: Path) -> None:
    from polyfuse.training.trainer import check_resumable

    def env(**ray: Any) -> dict[str, Any]:
        return {"env": {"id": "polyfuse/DigitsVQA-v0", "vectorization": "ray", "workers": 2,
                        "ray": {"address": None, "object_store_mb": 256, **ray}}}

    check_resumable(env(), env(address="10.0.0.5:6379", object_store_mb=2048), tmp_path)
    more_runners = env()
    more_runners["env"]["workers"] = 4
    with pytest.raises(PolyfuseError, match=r"config changed since the checkpoint \(env\.workers\)"):
        check_resumable(env(), more_runners, tmp_path)
