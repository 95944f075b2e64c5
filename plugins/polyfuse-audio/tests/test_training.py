"""Short training runs: speech carries the question to unseen voices, and a pipeline trains on the spoken env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polyfuse_audio.plugin import LogMelCNNConfig
from polyfuse_audio.log_mel_cnn import LogMelCNNEncoder
from polyfuse_audio.recordings import load

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digits_vqa_spoken_ppo.yaml"


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


def test_the_example_pipeline_trains_on_spoken_digits_and_evaluates_on_unseen_voices(tmp_path):
    """examples/digits_vqa_spoken_ppo.yaml, shortened to seconds: valid, trains, evaluates, checkpoints."""
    pytest.importorskip("polyfuse_ppo", reason="the example's optimizer is ppo (polyfuse-ppo)")
    from polyfuse.config import WarmStartConfig, load_pipeline
    from polyfuse.training.trainer import Trainer

    config = load_pipeline(EXAMPLE)
    trainer = config.trainer.model_copy(update={
        "total_steps": 256, "eval_every": 256, "eval_episodes": 16, "checkpoint_every": 256, "output_dir": tmp_path,
        "warm_start": WarmStartConfig(episodes=64, epochs=1)})
    Trainer(config.model_copy(update={"trainer": trainer}), progress=False).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["eval"]["greedy"]["success"] <= 1.0
    assert (tmp_path / "checkpoint").is_dir()
