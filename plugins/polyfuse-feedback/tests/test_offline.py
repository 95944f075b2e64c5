"""``polyfuse feedback train-reward``: a reward model fitted to a stored label set, then used by name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from polyfuse.errors import PolyfuseError
from polyfuse.training.trainer import Trainer
from polyfuse_feedback.offline import train_reward

from rlhf_runs import rlhf_config


def installed(registry: Any) -> Any:
    """The registry, once the plugins the test pipeline names (polyfuse-dqn, polyfuse-sbert) are known to be there."""
    if "dqn" not in registry.names("optimizers") or "sbert" not in registry.names("encoders"):
        pytest.skip("the test pipeline trains with polyfuse-dqn and reads questions with polyfuse-sbert")
    return registry


def test_train_reward_from_a_run_then_score_with_it_by_name(make_registry: Any, tmp_path: Path) -> None:
    registry = installed(make_registry())
    config = rlhf_config(registry, tmp_path / "run", total_steps=512)
    Trainer(config, registry, progress=False).run()
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    saved = tmp_path / "reward"
    args = argparse.Namespace(config=str(path), labels=str(tmp_path / "run"), project=None, output=str(saved),
                              steps=300, seed=0)
    assert train_reward(args, registry) == 0
    description = json.loads((saved / "reward_model.json").read_text())
    assert description["labels"] == 100 and description["heldout_accuracy"] > 0.5
    assert (saved / "reward_model.safetensors").stat().st_size < 5_000_000, "the frozen sbert is not copied"

    export = tmp_path / "labels.jsonl"
    from polyfuse_feedback.store import LabelStore

    with LabelStore.in_run(tmp_path / "run") as store:
        assert store.export_jsonl("run", export) == 100
    again = tmp_path / "reward-from-jsonl"
    assert train_reward(argparse.Namespace(**{**vars(args), "labels": str(export), "output": str(again)}),
                        registry) == 0
    np.testing.assert_equal(json.loads((again / "reward_model.json").read_text())["labels"], 100)
    assert not (again / "feedback.sqlite").exists(), "an export is read, not copied beside the model"

    fixed = config.model_copy(deep=True)
    fixed.reward.params = {"init_from": str(saved), "max_labels": 0}
    fixed.trainer.output_dir = str(tmp_path / "fixed")
    fixed.trainer.total_steps = 128
    summary = Trainer(fixed, registry, progress=False).run()
    assert summary["steps"] == 128 and not (tmp_path / "fixed" / "feedback.sqlite").exists()


def test_train_reward_refuses_what_it_cannot_use(make_registry: Any, tmp_path: Path) -> None:
    registry = installed(make_registry())
    pipeline = rlhf_config(registry, tmp_path / "run").model_dump(mode="json")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**pipeline, "reward": {"name": "env"}}), encoding="utf-8")
    args = argparse.Namespace(config=str(path), labels=str(tmp_path / "none.jsonl"), project=None,
                              output=str(tmp_path / "out"), steps=10, seed=0)
    with pytest.raises(PolyfuseError, match="reward.name is 'env'"):
        train_reward(args, registry)
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    with pytest.raises(PolyfuseError, match="no such file"):
        train_reward(args, registry)
    with pytest.raises(PolyfuseError, match="--steps"):
        train_reward(argparse.Namespace(**{**vars(args), "steps": 0}), registry)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolyfuseError, match="holds no label store"):
        train_reward(argparse.Namespace(**{**vars(args), "labels": str(empty)}), registry)


def test_a_named_head_reward_model_is_trained_offline_and_used_by_name(make_registry: Any, tmp_path: Path) -> None:
    registry = installed(make_registry())
    config = rlhf_config(registry, tmp_path / "run", total_steps=256)
    config.reward.params = {**config.reward.params, "head": "named", "action_text": "question"}
    Trainer(config, registry, progress=False).run()
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    saved = tmp_path / "reward"
    args = argparse.Namespace(config=str(path), labels=str(tmp_path / "run"), project=None, output=str(saved),
                              steps=50, seed=0)
    assert train_reward(args, registry) == 0
    from polyfuse_feedback.saved import read_saved_reward

    assert any(key.endswith("name_projection.weight") for key in read_saved_reward(saved).members)

    fixed = config.model_copy(deep=True)
    fixed.reward.params = {"init_from": str(saved), "max_labels": 0, "head": "named", "action_text": "question"}
    fixed.trainer.output_dir = str(tmp_path / "fixed")
    fixed.trainer.total_steps = 128
    assert Trainer(fixed, registry, progress=False).run()["steps"] == 128
