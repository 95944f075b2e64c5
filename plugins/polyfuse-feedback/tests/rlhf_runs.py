"""A short RLHF pipeline for the tests: DigitsVQA, the preference model with synthetic feedback, DQN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfuse.config import validate_pipeline


def rlhf_config(registry: Any, output_dir: Path, total_steps: int = 512) -> Any:
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 16, "vectorization": "native"},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "reward": {"name": "preference-model",
                   "params": {"max_labels": 100, "gradient_steps": 5, "schedule": "constant", "initial_share": 0.2,
                              "heldout_fraction": 0.5,  # enough held-out strict preferences to measure
                              "feedback": {"name": "synthetic", "params": {"error_rate": 0.1}}}},
        "optimizer": {"name": "dqn", "params": {"learning_starts": 128, "batch_size": 32}},
        "trainer": {"total_steps": total_steps, "eval_every": 512, "eval_episodes": 32, "checkpoint_every": 256,
                    "reward_update_every": 64, "output_dir": str(output_dir)},
    }, registry)
