"""``polyfuse export``: the exported model gives the in-process policy's actions (TorchScript; ONNX when installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from polyfuse.cli import main
from polyfuse.config import validate_pipeline
from polyfuse.registry import Registry
from polyfuse.training.trainer import Trainer

DIGITS = {
    "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
    "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
    "fuser": {"name": "gated", "params": {"hidden_dim": 32}},
    "optimizer": {"name": "dqn", "params": {"learning_starts": 64}},
    "trainer": {"total_steps": 512, "eval_every": 512, "eval_episodes": 16, "checkpoint_every": 512,
                "eval_modes": ["greedy"]},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    Trainer(validate_pipeline({**DIGITS, "trainer": {**DIGITS["trainer"], "output_dir": str(folder)}}),
            progress=False).run()
    return folder


@pytest.fixture(scope="module")
def held_out(run: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Held-out observations, the policy's greedy actions and probabilities in process, and the text features."""
    from polyfuse.envs import eval_kwargs, make_env
    from polyfuse.network import MultimodalNetwork
    from polyfuse.observations import stack
    from polyfuse.training.saved_policy import load_saved_policy

    env = make_env("polyfuse/DigitsVQA-v0", eval_kwargs("polyfuse/DigitsVQA-v0", {}))
    batch = stack([env.reset(seed=seed)[0] for seed in range(37)])  # a batch size the export never saw
    env.close()
    policy = load_saved_policy(run, Registry.load())
    try:
        optimizer = policy.optimizer
        with torch.no_grad():
            probabilities = optimizer.action_probabilities(optimizer.action_logits(batch)).numpy()
            network = next(m for m in optimizer.q_network.modules() if isinstance(m, MultimodalNetwork))
            features = network.encoders["question"](batch["question"]).numpy()
        actions = optimizer.act(batch, deterministic=True)
    finally:
        policy.close()
    return batch, actions, probabilities, features


def test_torchscript_export_acts_as_the_policy(run: Path, held_out: tuple, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    batch, actions, probabilities, features = held_out
    target = tmp_path / "policy.pt"
    assert main(["export", str(run), "--format", "torchscript", "-o", str(target)]) == 0
    assert "question_features (B, 384) float32" in capsys.readouterr().out
    description = json.loads(Path(f"{target}.json").read_text())
    assert [i["name"] for i in description["inputs"]] == ["image", "question_features"]
    model = torch.jit.load(str(target))
    logits, exported = model(torch.from_numpy(batch["image"]), torch.from_numpy(features))
    assert logits.argmax(1).numpy().tolist() == actions.tolist()
    np.testing.assert_allclose(exported.numpy(), probabilities, rtol=1e-5, atol=1e-6)


def test_onnx_export_acts_as_the_policy(run: Path, held_out: tuple, tmp_path: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"ONNX export needs {', '.join(missing)}: pip install 'polyfuse[onnx]'")
    import onnxruntime

    batch, actions, probabilities, features = held_out
    target = tmp_path / "policy.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(target)]) == 0
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits, exported = session.run(None, {"image": batch["image"], "question_features": features})
    assert logits.argmax(1).tolist() == actions.tolist()
    np.testing.assert_allclose(exported, probabilities, rtol=1e-4, atol=1e-5)


def test_a_trainable_text_encoder_is_named_in_the_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {**DIGITS, "modalities": {"image": {"encoder": "small-cnn"},
                                       "question": {"encoder": {"name": "sbert", "params": {"trainable": True}}}},
              "trainer": {**DIGITS["trainer"], "total_steps": 64, "eval_every": 64, "checkpoint_every": 64,
                          "output_dir": str(tmp_path / "run")}}
    Trainer(validate_pipeline(config), progress=False).run()
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript", "-o", str(tmp_path / "p.pt")]) == 2
    error = capsys.readouterr().err
    assert "modality 'question' is text" in error and "'sbert' trains with the policy" in error
    assert not (tmp_path / "p.pt").exists()
