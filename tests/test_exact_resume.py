"""Exact resume: a run killed at a checkpoint (or stopped by SIGTERM) and resumed writes the same metrics as
the uninterrupted run; its environments, samplers, exploration and torch streams are restored, not re-seeded."""

from __future__ import annotations

import gc
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.envs import make_vector_env
from polyfuse.training import TrackedVectorEnv
from polyfuse.training import trainer as trainer_module
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer

TIMING_KEYS = {"time_s", "steps_per_second"}

OPTIMIZERS = {
    "dqn": {"name": "dqn", "params": {"learning_starts": 64, "batch_size": 32, "hidden_sizes": [32]}},
    "ppo": {"name": "ppo", "params": {"n_steps": 4, "n_epochs": 2, "batch_size": 16, "activation": "relu",
                                      "hidden_sizes": [32]}},
}


def config(
    output_dir: Path, optimizer: str, vectorization: str = "native", disk_cache: bool = True, **trainer: Any
) -> PipelineConfig:
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8, "vectorization": vectorization},
        "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"channels": [8], "output_dim": 16}}},
                       "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "optimizer": OPTIMIZERS[optimizer],
        # A disk feature cache: a frozen encoder's features are then bit-identical in every session (see README).
        "feature_cache": {"directory": str(output_dir.parent / "features") if disk_cache else None},
        "trainer": {"total_steps": 768, "eval_every": 320, "eval_episodes": 16, "checkpoint_every": 192,
                    "output_dir": str(output_dir), **trainer},
    })


class Killed(BaseException):
    """Stands for a kill -9 right after a checkpoint is written."""


def run_killed_after_saves(cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch, saves: int, resume: bool) -> None:
    calls = []

    def save_then_die(*args: Any, **kwargs: Any) -> Path:
        location = save_checkpoint(*args, **kwargs)
        calls.append(location)
        if len(calls) == saves:
            raise Killed
        return location

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        Trainer(cfg, resume=resume, progress=False).run()
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
    gc.collect()  # the killed run's networks and in-memory feature cache are gone, as in a new process


def comparable(path: Path) -> list[dict[str, Any]]:
    """Metrics without timings; the feature cache's look-ups (hits + misses) instead of how each was served."""
    records = []
    for record in read_metrics(path):
        kept = {k: v for k, v in record.items() if k not in TIMING_KEYS and not k.startswith("cache/")}
        if "cache/hits" in record:
            kept["cache/lookups"] = record["cache/hits"] + record["cache/misses"]
        records.append(kept)
    return records


def uninterrupted(tmp_path: Path, optimizer: str, **kwargs: Any) -> list[dict[str, Any]]:
    Trainer(config(tmp_path / "whole", optimizer, **kwargs), progress=False).run()
    gc.collect()
    return comparable(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.parametrize("optimizer", ["dqn", "ppo"])
def test_killed_at_each_checkpoint_and_resumed_gives_the_uninterrupted_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    expected = uninterrupted(tmp_path, optimizer)
    cfg = config(tmp_path / "killed", optimizer)
    run_killed_after_saves(cfg, monkeypatch, saves=1, resume=False)  # killed at the first checkpoint
    run_killed_after_saves(cfg, monkeypatch, saves=1, resume=True)  # and at the second
    Trainer(cfg, resume=True, progress=False).run()
    resumed = comparable(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in expected]
    assert resumed == expected
    assert any(r.get("cache/lookups") for r in resumed), "the feature-cache counters are compared too"


def test_sync_vector_envs_of_digits_resume_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = uninterrupted(tmp_path, "dqn", vectorization="sync")
    cfg = config(tmp_path / "killed", "dqn", vectorization="sync")
    run_killed_after_saves(cfg, monkeypatch, saves=2, resume=False)
    Trainer(cfg, resume=True, progress=False).run()
    assert comparable(tmp_path / "killed" / "metrics.jsonl") == expected


def test_sigterm_between_log_points_keeps_the_grid_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3200 // 200 = 16 steps between train lines, 8 env steps per DQN iterate: a line every other iterate.
    expected = uninterrupted(tmp_path, "dqn", total_steps=3200, checkpoint_every=100_000)
    cfg = config(tmp_path / "stopped", "dqn", total_steps=3200, checkpoint_every=100_000)
    original = Trainer._check_progress

    def sigterm_at_step_200(self: Trainer, before: Any, after: Any, stalled: int) -> None:
        original(self, before, after, stalled)
        if after.env_steps == 200:  # not a multiple of 16: between two train lines
            self._stop_signal = signal.SIGTERM

    monkeypatch.setattr(Trainer, "_check_progress", sigterm_at_step_200)
    summary = Trainer(cfg, progress=False).run()
    assert summary["interrupted"] == "SIGTERM" and summary["steps"] == 200
    steps = [r["step"] for r in read_metrics(tmp_path / "stopped" / "metrics.jsonl") if r["kind"] == "train"]
    assert steps and all(step % 16 == 0 for step in steps) and max(steps) < 200, "no line off the grid"
    monkeypatch.setattr(Trainer, "_check_progress", original)
    gc.collect()
    Trainer(cfg, resume=True, progress=False).run()
    assert comparable(tmp_path / "stopped" / "metrics.jsonl") == expected


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_digits_vector_env_state_survives_a_checkpoint(tmp_path: Path, vectorization: str) -> None:
    envs = TrackedVectorEnv(make_vector_env("polyfuse/DigitsVQA-v0", num_envs=4, vectorization=vectorization,
                                            seed=5))
    envs.reset()
    envs.step(np.zeros(4, dtype=np.int64))
    save_checkpoint(tmp_path, {"envs": envs.get_state()})
    ahead = [envs.step(np.full(4, 3))[0]["question"] for _ in range(5)]
    fresh = TrackedVectorEnv(make_vector_env("polyfuse/DigitsVQA-v0", num_envs=4, vectorization=vectorization,
                                             seed=99))
    fresh.reset()
    fresh.set_state(load_checkpoint(tmp_path / "checkpoint")["envs"])
    assert fresh.restored and fresh.env_steps == 4
    assert [fresh.step(np.full(4, 3))[0]["question"] for _ in range(5)] == ahead


def test_envs_without_state_fall_back_to_reseeding() -> None:
    pytest.importorskip("minigrid")
    envs = TrackedVectorEnv(make_vector_env("BabyAI-GoToLocalS6N2-v0", num_envs=2, seed=0))
    envs.reset()
    assert envs.get_state() is None  # minigrid's grids are Python objects: no state without pickle


def test_without_a_disk_cache_only_recomputed_frozen_features_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-memory feature cache dies with the process: the resumed run recomputes sbert's features in other
    batches, which moves them by about 1e-7 (documented); everything else is exact."""

    expected = uninterrupted(tmp_path, "dqn", disk_cache=False)
    cfg = config(tmp_path / "killed", "dqn", disk_cache=False)
    run_killed_after_saves(cfg, monkeypatch, saves=1, resume=False)
    Trainer(cfg, resume=True, progress=False).run()
    resumed = comparable(tmp_path / "killed" / "metrics.jsonl")
    assert len(resumed) == len(expected)
    for got, want in zip(resumed, expected):
        assert set(got) == set(want)
        assert got == {k: pytest.approx(v, rel=1e-5, abs=1e-6) if isinstance(v, float) else v
                       for k, v in want.items()}


def test_babyai_resumes_deterministically_with_new_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("minigrid")
    import shutil

    def babyai(output_dir: Path) -> PipelineConfig:
        return validate_pipeline({
            "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 4},
            "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"mode": "grid"}}},
                           "direction": {"encoder": "onehot"}},
            "fuser": {"name": "concat", "params": {"output_dim": 32}},
            "optimizer": {"name": "ppo", "params": {"n_steps": 8, "n_epochs": 1, "batch_size": 16}},
            "trainer": {"total_steps": 128, "eval_every": 64, "eval_episodes": 4, "checkpoint_every": 64,
                        "output_dir": str(output_dir)},
        })

    run_killed_after_saves(babyai(tmp_path / "a"), monkeypatch, saves=1, resume=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for name in ("a", "b"):
        Trainer(babyai(tmp_path / name), resume=True, progress=False).run()
        gc.collect()
    assert "cannot save their state without pickle" in capsys.readouterr().err
    assert comparable(tmp_path / "a" / "metrics.jsonl") == comparable(tmp_path / "b" / "metrics.jsonl")
