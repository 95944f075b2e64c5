"""A short RLHF run through the trainer: DigitsVQA, the preference model with synthetic feedback, DQN."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from rlhf_runs import rlhf_config
from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer
from polyfuse_feedback.store import LabelStore


def test_an_rlhf_run_logs_reward_model_metrics(make_registry: Any, tmp_path: Path) -> None:
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    registry = make_registry()
    Trainer(rlhf_config(registry, tmp_path), registry, progress=False).run()
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/labels" in r]
    assert logged and logged[-1]["reward/labels"] == 100 and logged[-1]["reward/asked"] == 100
    assert "reward/loss" in logged[-1]  # heldout_accuracy needs held-out strict preferences: a unit test checks it
    assert any("reward/return_correlation" in r for r in logged)
    assert logged[-1]["reward/feedback/synthetic/labelled"] == 100
    assert read_checkpoint_tree(checkpoint_location(tmp_path))["reward"]["updates"] == 8
    assert (tmp_path / "feedback.sqlite").is_file()
    assert any("reward/segment_env_return" in r for r in logged)
    with LabelStore.in_run(tmp_path) as store:  # what the admin page plots
        assert [step for step, _ in store.metric_history(tmp_path.name, "labels")] == list(range(1, 9))
        assert store.metric_history(tmp_path.name, "segment_env_return")


def test_kill_9_loses_no_acknowledged_label_and_the_run_resumes(make_registry: Any, tmp_path: Path) -> None:
    """A real ``kill -9`` of ``polyfuse run`` between checkpoints: labels stored after the last one stay."""
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    registry = make_registry()
    config = rlhf_config(registry, tmp_path / "run", total_steps=1024)
    config.trainer.checkpoint_every = 512
    path = tmp_path / "rlhf.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    database = tmp_path / "run" / "feedback.sqlite"
    process = subprocess.Popen([sys.executable, "-m", "polyfuse", "run", str(path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            if checkpoint_location(tmp_path / "run") is not None and len(stored_labels(database)) > 60:
                break  # a checkpoint at step 512 and labels asked after it
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    before = stored_labels(database)
    assert before and checkpoint_location(tmp_path / "run") is not None
    Trainer(config, registry, resume=True, progress=False).run()
    after = stored_labels(database)
    assert after[: len(before)] == before, "every label stored before the kill is still there, unchanged"
    assert len(after) == 100 and len({row[0] for row in after}) == 100, "the budget is kept, nothing doubled"
    logged = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward/labels" in r]
    assert logged[-1]["reward/labels"] == 100 and logged[-1]["step"] == 1024


def stored_labels(database: Path) -> list[tuple[Any, ...]]:
    """(label id, query id, preference, rating, confidence) of every label in the run's SQLite store."""
    if not database.is_file():
        return []
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as connection:
        try:
            return connection.execute(
                "SELECT id, query_id, preference, rating, confidence FROM labels ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the tables are not created yet
            return []
