"""The ready-made configs in examples/ are valid against the installed plugins and actually train."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfuse.config import load_pipeline
from polyfuse.training.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = ["digits_vqa_ppo.yaml", "digits_vqa_dqn.yaml", "babyai_goto_local_ppo.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_example_is_valid_and_trains(name: str, tmp_path: Path) -> None:
    config = load_pipeline(EXAMPLES / name)
    assert config.trainer.output_dir.parts[0] == "runs"
    steps = 4 * config.env.num_envs * 16
    short = config.model_copy(update={"trainer": config.trainer.model_copy(update={
        "total_steps": steps, "eval_every": steps, "eval_episodes": 8, "output_dir": tmp_path,
        "warm_start": None,
    })})
    summary = Trainer(short, progress=False).run()
    assert summary["steps"] >= steps
    assert 0 <= summary["eval"]["success"] <= 1
