"""Evaluation suites in the trainer: several environments evaluated together, per environment and aggregated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from polyfuse.cli import main
from polyfuse.config import validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer


def babyai_config(output_dir: Path, **trainer: Any) -> dict[str, Any]:
    return {
        "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 4},
        "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"mode": "grid"}}},
                       "direction": {"encoder": "onehot"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 16, "activation": "relu"}},
        "trainer": {"total_steps": 128, "eval_every": 64, "eval_episodes": 5, "checkpoint_every": 128,
                    "output_dir": str(output_dir), **trainer},
    }


def test_a_suite_is_reported_per_environment_and_aggregated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = [{"id": "BabyAI-GoToLocalS6N2-v0", "name": "own"}, {"id": "BabyAI-GoToObjS6-v1"},
             {"id": "BabyAI-GoToLocalS8N7-v0"}]
    summary = Trainer(validate_pipeline(babyai_config(tmp_path, eval_suite=suite, eval_modes=["sampled", "greedy"])),
                      progress=False).run()
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 64, 128]
    last = evals[-1]
    names = ("own", "BabyAI-GoToObjS6-v1", "BabyAI-GoToLocalS8N7-v0")
    for mode in ("greedy", "sampled"):
        per_env = [last[f"eval/suite/{name}/{mode}/success"] for name in names]
        assert last[f"eval/{mode}/success"] == pytest.approx(sum(per_env) / 3)
        assert last[f"eval/{mode}/success_iqm"] == pytest.approx(sum(per_env) / 3)  # 3 values: nothing trimmed
        for key in ("success", "return", "success_iqm", "return_iqm"):
            assert last[f"eval/{mode}/{key}_low"] <= last[f"eval/{mode}/{key}"] <= last[f"eval/{mode}/{key}_high"]
    assert last["eval/success"] == last["eval/sampled/success"], "the first of eval_modes is primary"
    assert last["eval/envs"] == 3 and last["eval/episodes"] == 5
    assert summary["eval"]["primary"] == "sampled" and set(summary["eval"]["suite"]) == set(names)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    # polyfuse eval on the run evaluates its suite, its primary mode first, and finds the trainer's figures
    assert main(["eval", str(tmp_path), "--workers", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["primary"] == "sampled" and result["suite"] == summary["eval"]["suite"]
    assert result["greedy"] == summary["eval"]["greedy"] and result["sampled"] == summary["eval"]["sampled"]


def test_a_suite_environment_the_policy_cannot_read_stops_the_run_before_training(tmp_path: Path) -> None:
    config = validate_pipeline(babyai_config(tmp_path, eval_suite=[{"id": "polyfuse/DigitsVQA-v0"}]))
    with pytest.raises(PolyfuseError, match="trainer.eval_suite environment 'DigitsVQA-v0'.*modality 'image'"):
        Trainer(config, progress=False).run()
    assert not (tmp_path / "metrics.jsonl").exists() or not read_metrics(tmp_path / "metrics.jsonl")


def test_suite_and_mode_settings_are_validated(tmp_path: Path) -> None:
    for trainer, message in [
        ({"eval_modes": ["greedy", "greedy"]}, "each mode at most once"),
        ({"eval_modes": []}, "eval_modes"),
        ({"eval_modes": ["argmax"]}, "eval_modes"),
        ({"eval_suite": [{"id": "my/GoToObjS6-v1"}, {"id": "tasks:GoToObjS6-v1"}]}, "named GoToObjS6-v1"),
        ({"eval_suite": [{"id": "a", "name": "x/y"}]}, "eval_suite.0.name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_pipeline(babyai_config(tmp_path, **trainer))


def test_validate_checks_suite_environments_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    suite = [{"id": "BabyAI-GoToObjS6-v1"}, {"id": "BabyAI-GoToLocalS6N9-v0"}, {"id": "polyfuse/DigitsVQA-v0"}]
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump(babyai_config(tmp_path / "run", eval_suite=suite)))
    assert main(["validate", str(config)]) == 2
    error = capsys.readouterr().err
    assert "trainer.eval_suite[0]" not in error  # a level the policy can act in
    assert "trainer.eval_suite[1].id" in error and "BabyAI-GoToLocalS6N9-v0" in error  # no such level
    assert "trainer.eval_suite[2]" in error and "modality 'image'" in error  # a task it cannot read
