"""mmcnn in pipelines: `polyfuse validate` pairs it with encoders that give maps, networks feed it, runs learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from polyfuse.config import PipelineConfig
from polyfuse.errors import PolyfuseError
from polyfuse.network import build_network
from polyfuse.preflight import pipeline_problems
from polyfuse_mmcnn import plugin

pytest.importorskip("minigrid")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "babyai_mmcnn_ppo.yaml"


def config(image_encoder: dict, fuser_params: dict | None = None, **extra) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 2},
        "modalities": {"image": {"encoder": image_encoder}, "direction": {"encoder": "onehot"}, **extra},
        "fuser": {"name": "mmcnn", "params": {"width": 8, "conditioning_dim": 8, "output_dim": 16,
                                              **(fuser_params or {})}},
        "optimizer": {"name": "ppo"},
    })


def fuser_problems(cfg: PipelineConfig, registry) -> list[str]:
    return [message for path, message in pipeline_problems(cfg, registry) if path.startswith("fuser")]


def test_validate_accepts_mmcnn_over_a_small_cnn_map(make_registry) -> None:
    registry = make_registry(plugin)
    assert fuser_problems(config({"name": "small-cnn", "params": {"mode": "grid"}}), registry) == []


def test_validate_refuses_an_encoder_without_a_map_naming_fuser_modality_and_encoder(make_registry) -> None:
    registry = make_registry(plugin)
    [problem] = fuser_problems(config({"name": "flatten"}, {"image": "image"}), registry)
    assert "'mmcnn'" in problem and "'image'" in problem and "'flatten'" in problem and "small-cnn" in problem


def test_validate_refuses_a_pipeline_where_no_encoder_gives_a_map(make_registry) -> None:
    registry = make_registry(plugin)
    [problem] = fuser_problems(config({"name": "flatten"}, {}), registry)  # default image: the one with a map
    assert problem.startswith("fuser 'mmcnn' fuses a spatial feature map, but no modality's encoder gives one")
    assert "image (flatten)" in problem and "direction (onehot)" in problem


def test_validate_names_params_image_when_several_encoders_give_maps(make_registry) -> None:
    registry = make_registry(plugin)
    grid = {"name": "small-cnn", "params": {"mode": "grid"}}
    cfg = config(grid, {}, again={"key": "image", "encoder": grid})
    [problem] = fuser_problems(cfg, registry)
    assert "set params.image" in problem and "'image', 'again'" in problem
    named = config(grid, {"image": "again"}, again={"key": "image", "encoder": grid})
    assert fuser_problems(named, registry) == []
    [problem] = fuser_problems(config(grid, {"image": "nothing"}), registry)
    assert "'nothing'" in problem and "does not have" in problem


def test_the_network_feeds_the_small_cnn_map_to_mmcnn(make_registry) -> None:
    from polyfuse.envs import make_env

    registry = make_registry(plugin)
    env = make_env("BabyAI-GoToLocalS6N2-v0", {})
    observation, _ = env.reset(seed=0)
    env.close()
    torch.manual_seed(0)
    network = build_network(config({"name": "small-cnn", "params": {"mode": "grid", "channels": [8]}}),
                            env.observation_space, registry)
    assert network.fuser.map_shapes == {"image": (8, 7, 7)}
    batch = {key: np.stack([observation[key]] * 3) for key in ("image", "direction")}
    out = network(batch)
    assert out.shape == (3, 16) and bool(torch.isfinite(out).all())
    out.sum().backward()
    assert network.encoders["image"].convs[0].weight.grad.abs().sum() > 0  # the map trains the encoder
    assert network(
        {"direction": batch["direction"]}).shape == (3, 16)  # no image observation: the placeholder
    with pytest.raises(PolyfuseError, match=r"fuser 'mmcnn' fuses a spatial feature map.*image \(flatten\)"):
        build_network(config({"name": "flatten"}), env.observation_space, registry)
    with pytest.raises(PolyfuseError, match="fuser 'mmcnn' consumes the spatial feature map of modality 'image'"):
        build_network(config({"name": "flatten"}, {"image": "image"}), env.observation_space, registry)


def test_polyfuse_runs_the_example_for_a_few_hundred_steps(tmp_path) -> None:
    """The example, shrunk: validate, then 512 PPO steps on BabyAI with FiLM over the small-cnn grid map."""
    pytest.importorskip("polyfuse_ppo")
    pytest.importorskip("polyfuse_sbert")
    example = yaml.safe_load(EXAMPLE.read_text())
    example["env"]["num_envs"] = 4
    example["modalities"]["image"]["encoder"]["params"]["channels"] = [16]
    example["fuser"]["params"].update(width=16, conditioning_dim=16, output_dim=32)
    example["optimizer"]["params"].update(n_steps=64, batch_size=64, n_epochs=1)
    example["trainer"] = {"total_steps": 512, "eval_every": 512, "eval_episodes": 4, "checkpoint_every": 512,
                          "output_dir": str(tmp_path / "run")}
    path = tmp_path / "mmcnn.yaml"
    path.write_text(yaml.safe_dump(example))
    for command in (["validate", str(EXAMPLE)], ["validate", str(path)]):
        checked = subprocess.run([sys.executable, "-m", "polyfuse", *command], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
    ran = subprocess.run([sys.executable, "-m", "polyfuse", "run", str(path), "--json"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 512 and summary["optimizer"] == "ppo"
    assert (tmp_path / "run" / "checkpoint").exists()
