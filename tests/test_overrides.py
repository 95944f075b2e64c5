"""``--set PATH=VALUE``: config variants from the command line, for run, validate, compare and tune."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path

import pytest
import yaml

from polyfuse.cli import main
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.overrides import apply_overrides, describe
from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree

from test_run_cli import start_and_wait_for_checkpoint, write_config


def test_values_are_yaml_and_missing_mappings_are_created() -> None:
    data = {"env": {"id": "A"}, "trainer": {"total_steps": 10}}
    apply_overrides(data, ["env.id=BabyAI-PickupLoc-v0", "trainer.warm_start.episodes=2000",
                           "optimizer.params.hidden_sizes=[64, 64]", "optimizer.params.learning_rate=1.0e-3",
                           "env.kwargs.a=null"])
    assert data == {"env": {"id": "BabyAI-PickupLoc-v0", "kwargs": {"a": None}},
                    "trainer": {"total_steps": 10, "warm_start": {"episodes": 2000}},
                    "optimizer": {"params": {"hidden_sizes": [64, 64], "learning_rate": 0.001}}}


def test_later_assignments_win_and_a_component_named_alone_opens_up() -> None:
    data = {"modalities": {"mission": {"encoder": "word-gru"}}, "fuser": {"name": "concat", "params": {"a": 1}}}
    apply_overrides(data, ["modalities.mission.encoder.params.embedding_dim=32", "fuser=mmcnn", "fuser=film"])
    assert data == {"modalities": {"mission": {"encoder": {"name": "word-gru", "params": {"embedding_dim": 32}}}},
                    "fuser": "film"}


@pytest.mark.parametrize(("assignment", "message"), [
    ("env.id", "expected PATH=VALUE"),
    ("=3", "expected PATH=VALUE"),
    ("env..id=3", "expected PATH=VALUE"),
    ("env.id.x=1", "env.id is 'A', not a mapping; set env.id as a whole (--set env.id=VALUE)"),
    ("trainer.total_steps.x=1", "trainer.total_steps is 10, not a mapping"),
])
def test_malformed_assignments_name_the_fix(assignment: str, message: str) -> None:
    with pytest.raises(PolyfuseError) as caught:
        apply_overrides({"env": {"id": "A"}, "trainer": {"total_steps": 10}}, [assignment])
    assert message in str(caught.value)


def test_a_value_that_is_not_yaml_names_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides({}, ["modalities.image.encoder.params.channels=[16, 32"])
    assert "--set modalities.image.encoder.params.channels" in str(caught.value) and "invalid YAML" in str(caught.value)


def test_validate_reports_the_changed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["validate", str(config), "--set", "fuser.params.output_dim=32"]) == 0
    assert f"{config} --set fuser.params.output_dim=32: valid" in capsys.readouterr().out
    assert main(["validate", str(config), "--set", "fuser.params.output_dim=-1"]) == 2
    error = capsys.readouterr().err
    assert describe(str(config), ["fuser.params.output_dim=-1"]) in error and "fuser.params.output_dim" in error
    assert "Traceback" not in error
    assert main(["validate", str(config), "--set", "fuser"]) == 2
    assert "expected PATH=VALUE" in capsys.readouterr().err


def test_run_trains_the_changed_config_and_says_how_to_resume_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A stopped run's advice repeats its --set: resuming without them is refused (the config would differ)."""
    config, output = write_config(tmp_path, total_steps=100_000), tmp_path / "out"
    process = start_and_wait_for_checkpoint(config, output, "--set", "fuser.params.output_dim=32",
                                            "--set", "optimizer.params.ent_coef=0.02")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    saved = read_checkpoint_tree(checkpoint_location(output))["config"]
    assert saved["fuser"]["params"]["output_dim"] == 32 and saved["optimizer"]["params"]["ent_coef"] == 0.02
    advice = stderr.split("continue with `")[1].split("`")[0]
    assert "--set fuser.params.output_dim=32 --set optimizer.params.ent_coef=0.02 --resume" in advice
    assert main(["run", str(config), "--output-dir", str(output), "--resume"]) == 2
    assert "fuser.params.output_dim" in capsys.readouterr().err
    resumed = shlex.split(advice)[1:] + ["--steps", str(read_checkpoint_tree(checkpoint_location(output))
                                                        ["trainer"]["steps"] + 256), "--json"]
    assert main(resumed) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] > 256


def test_compare_refuses_to_mix_cells_of_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The comparison folder records its config: a rerun with another --set stops before training anything."""
    config, board = write_config(tmp_path), tmp_path / "board"
    board.mkdir()
    record = {"config": yaml.safe_load(config.read_text()), "steps": None}
    record["config"]["env"]["num_envs"] = 4
    (board / "comparison.json").write_text(json.dumps(record))
    assert main(["compare", str(config), "--fusers", "concat", "-o", str(board)]) == 2
    error = capsys.readouterr().err
    assert "holds a comparison of another config (changed: env.num_envs)" in error and "-o DIR" in error
    command = ["compare", str(config), "--set", "env.num_envs=4", "--steps", "64", "--fusers", "concat", "-o",
               str(board)]
    assert main(command) == 2
    assert "(changed: --steps)" in capsys.readouterr().err
    assert not (board / "cells").exists()


def test_every_rank_of_a_data_parallel_run_gets_the_same_assignments(tmp_path: Path) -> None:
    from polyfuse.cli import build_parser
    from polyfuse.registry import default_registry
    from polyfuse.run import resolve_config
    from polyfuse.training.launch import rank_arguments

    config = write_config(tmp_path)
    args = build_parser().parse_args(["run", str(config), "--set", "fuser.params.output_dim=32",
                                      "--nproc", "2", "--set", "env.num_envs=4"])
    resolved = resolve_config(args, default_registry())
    assert resolved.fuser.params["output_dim"] == 32 and resolved.env.num_envs == 4
    assert rank_arguments(args) == ["run", str(config), "--set", "fuser.params.output_dim=32",
                                    "--set", "env.num_envs=4"]
