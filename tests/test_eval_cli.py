"""``polyfuse eval``: a trained run's policy, both modes, other environments, processes, recordings, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from polyfuse.cli import main
from polyfuse.config import validate_pipeline
from polyfuse.training.trainer import Trainer


def train(output_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    return Trainer(validate_pipeline({**config, "trainer": {**config["trainer"], "output_dir": str(output_dir)}}),
                   progress=False).run()


DIGITS = {
    "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
    "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
    "fuser": {"name": "concat", "params": {"output_dim": 32}},
    "optimizer": {"name": "ppo", "params": {"n_steps": 32, "activation": "relu"}},
    "trainer": {"total_steps": 512, "eval_every": 512, "eval_episodes": 48, "checkpoint_every": 512},
}
BABYAI = {
    "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 4},
    "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"mode": "grid"}}},
                   "direction": {"encoder": "onehot"}},
    "fuser": {"name": "concat", "params": {"output_dim": 32}},
    "optimizer": {"name": "ppo", "params": {"n_steps": 16, "activation": "relu"}},
    "trainer": {"total_steps": 128, "eval_every": 128, "eval_episodes": 4, "checkpoint_every": 128},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("digits")
    return folder, train(folder, DIGITS)


def evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    assert main(["eval", *args, "--json"]) == 0
    stdout = capsys.readouterr().out
    return json.loads(stdout.strip().splitlines()[-1]), stdout


@pytest.fixture(scope="module")
def babyai_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("babyai")
    train(folder, BABYAI)
    return folder


def test_eval_reproduces_the_trainers_final_evaluation(
    digits_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder, summary = digits_run
    result, stdout = evaluate(capsys, str(folder), "--workers", "1", "--record", str(tmp_path / "gifs"),
                              "--record-episodes", "2")
    for mode in ("greedy", "sampled"):  # same checkpoint, same episodes, same sampling seeds: the same figures
        assert result[mode] == summary["eval"][mode]
    assert result["success"] == summary["eval"]["success"] and result["primary"] == "greedy"
    assert result["episodes"] == 48 and result["step"] == summary["steps"]
    assert "greedy:  success" in stdout and "sampled: success" in stdout
    assert sorted(Path(p).name for p in result["recordings"]) == [
        f"DigitsVQA-v0-{mode}-{i}.gif" for mode in ("greedy", "sampled") for i in (0, 1)]
    from PIL import Image

    with Image.open(result["recordings"][0]) as gif:
        assert gif.n_frames == 2  # the question answered, then the outcome


@pytest.mark.slow  # two spawned processes each import torch and load the policy: about 30 s on 2 loaded cores
def test_eval_in_processes_matches_one_process(babyai_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alone, _ = evaluate(capsys, str(babyai_run / "checkpoint"), "--mode", "sampled", "--episodes", "40",
                        "--workers", "1")
    spread, _ = evaluate(capsys, str(babyai_run), "--mode", "sampled", "--episodes", "40", "--workers", "2")
    assert alone["sampled"] == spread["sampled"] and "greedy" not in spread and spread["primary"] == "sampled"


def test_eval_refuses_an_environment_the_policy_cannot_read(
    digits_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = digits_run
    assert main(["eval", str(folder), "--env", "BabyAI-GoToLocalS6N2-v0"]) == 2
    error = capsys.readouterr().err
    assert "error: the policy cannot act in BabyAI-GoToLocalS6N2-v0: modality 'image' (observation key 'image')" \
        in error and "modality 'question' reads observation key 'question', which BabyAI-GoToLocalS6N2-v0 lacks" \
        in error


def test_eval_errors_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist; give a run's output_dir" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_a_babyai_policy_on_other_levels_as_a_suite(
    babyai_run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result, stdout = evaluate(capsys, str(babyai_run), "--env", "BabyAI-GoToLocalS8N7-v0", "--env",
                              "BabyAI-GoToObjS6-v1", "--episodes", "6", "--workers", "1",
                              "--record", str(tmp_path / "gifs"), "--record-episodes", "1")
    assert set(result["suite"]) == {"BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToObjS6-v1"} and result["envs"] == 2
    for mode in ("greedy", "sampled"):
        per_env = [result["suite"][name][mode]["success"] for name in result["suite"]]
        assert result[mode]["success"] == pytest.approx(sum(per_env) / 2)
        assert result[mode]["success_low"] <= result[mode]["success"] <= result[mode]["success_high"]
        assert "success_iqm" in result[mode]
    assert "IQM over environments" in stdout and len(result["recordings"]) == 4
    from PIL import Image

    with Image.open(result["recordings"][0]) as gif:
        assert gif.n_frames >= 2 and gif.size[0] >= 96  # minigrid's whole-grid rendering, one frame per step
