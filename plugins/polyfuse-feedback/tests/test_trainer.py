"""A short RLHF run through the trainer: DigitsVQA, the preference model with synthetic feedback, DQN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from polyfuse.config import validate_pipeline
from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer


def rlhf_config(registry: Any, output_dir: Path, total_steps: int = 512) -> Any:
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 16, "vectorization": "native"},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "reward": {"name": "preference-model",
                   "params": {"labels_per_update": 20, "max_labels": 100, "gradient_steps": 5,
                              "feedback": {"name": "synthetic", "params": {"error_rate": 0.1}}}},
        "optimizer": {"name": "dqn", "params": {"learning_starts": 128, "batch_size": 32}},
        "trainer": {"total_steps": total_steps, "eval_every": 512, "eval_episodes": 32, "checkpoint_every": 256,
                    "reward_update_every": 64, "output_dir": str(output_dir)},
    }, registry)


def test_an_rlhf_run_logs_reward_model_metrics(make_registry: Any, tmp_path: Path) -> None:
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    registry = make_registry()
    Trainer(rlhf_config(registry, tmp_path), registry, progress=False).run()
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/labels" in r]
    assert logged and logged[-1]["reward/labels"] == 100 and logged[-1]["reward/asked"] == 100
    assert all(key in logged[-1] for key in ("reward/loss", "reward/heldout_accuracy"))
    assert any("reward/disagreement" in r for r in logged)
    saved = read_checkpoint_tree(checkpoint_location(tmp_path))["reward"]
    assert saved["asked"] == 100 and saved["store"]["labels"] == 100


def test_labels_survive_resume(make_registry: Any, tmp_path: Path) -> None:
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    registry = make_registry()
    Trainer(rlhf_config(registry, tmp_path, total_steps=256), registry, progress=False).run()
    assert read_checkpoint_tree(checkpoint_location(tmp_path))["reward"]["asked"] == 80
    Trainer(rlhf_config(registry, tmp_path, total_steps=512), registry, resume=True, progress=False).run()
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/labels" in r]
    assert logged[-1]["reward/labels"] == 100, "the resumed run kept its 80 labels and asked 20 more"
