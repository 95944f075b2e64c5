"""Short training runs: speech carries the question to unseen voices, and a pipeline trains on the spoken env."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from polyfuse_audio.plugin import LogMelCNNConfig
from polyfuse_audio.log_mel_cnn import LogMelCNNEncoder
from polyfuse_audio.recordings import load


def test_log_mel_cnn_learns_questions_that_unseen_voices_ask():
    """Supervised, a few seconds: the encoder tells "is this a seven?" from "is this a one?" across voices."""
    torch.manual_seed(0)
    recordings = load()
    held_out = np.array([recordings.voices[v] in recordings.test_voices for v in recordings.voice])
    is_a = np.array([recordings.questions[q].startswith("is this a") for q in recordings.question])
    train, test = np.flatnonzero(~held_out & is_a), np.flatnonzero(held_out & is_a)  # 10 number words
    labels = torch.from_numpy(recordings.question)
    config = LogMelCNNConfig(sample_rate=8000, n_mels=40, window_ms=32, hop_ms=20, channels=[32, 32, 32],
                             output_dim=32)
    model = nn.Sequential(LogMelCNNEncoder(config, recordings.sample_rate), nn.Linear(32, len(recordings.questions)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        batch = rng.choice(train, 32)
        loss = nn.functional.cross_entropy(model(recordings.waveforms[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(recordings.waveforms[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy > 0.5, f"held-out voices: {accuracy:.2f} of number words recognised (chance 0.10)"


def test_a_ppo_pipeline_trains_on_spoken_digits_and_evaluates_on_unseen_voices(make_registry, tmp_path):
    pytest.importorskip("polyfuse_ppo", reason="the pipeline run needs an optimizer plugin (polyfuse-ppo)")
    from polyfuse.config import validate_pipeline
    from polyfuse.training.trainer import Trainer

    registry = make_registry()
    config = validate_pipeline({
        "env": {"id": "polyfuse/SpokenDigitsVQA-v0", "num_envs": 8, "vectorization": "native"},
        "modalities": {
            "image": {"encoder": {"name": "small-cnn", "params": {"channels": [8], "output_dim": 16}}},
            "speech": {"encoder": {"name": "log-mel-cnn", "params": {
                "sample_rate": 8000, "n_mels": 20, "window_ms": 32, "hop_ms": 20, "channels": [16, 16],
                "output_dim": 16}}},
        },
        "fuser": {"name": "concat", "params": {"output_dim": 16}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 16, "n_epochs": 1, "batch_size": 64}},
        "trainer": {"total_steps": 256, "eval_every": 256, "eval_episodes": 16, "checkpoint_every": 256,
                    "warm_start": {"episodes": 64, "epochs": 1}, "output_dir": str(tmp_path)},
    }, registry)
    Trainer(config, registry, progress=False).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["eval"]["greedy"]["success"] <= 1.0
    assert (tmp_path / "checkpoint").is_dir()
