"""The ready-made configs in examples/ are valid against the installed plugins and actually train."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfuse.config import load_pipeline
from polyfuse.training.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = ["digits_vqa_ppo.yaml", "digits_vqa_dqn.yaml", "babyai_goto_local_ppo.yaml", "digits_vqa_dpo.yaml",
           "digits_vqa_a2c.yaml"]

PIPELINES = sorted(p.name for p in EXAMPLES.glob("*.yaml") if not p.name.endswith("_space.yaml"))  # not tune spaces


@pytest.mark.parametrize("name", PIPELINES)
def test_every_example_pipeline_validates_against_the_installed_plugins(name: str) -> None:
    """What `polyfuse validate` checks, for the configs not trained above too (they need hours or services)."""
    config = load_pipeline(EXAMPLES / name)
    assert config.trainer.output_dir.parts[0] == "runs"


@pytest.mark.parametrize("name", CONFIGS)
def test_example_is_valid_and_trains(name: str, tmp_path: Path) -> None:
    config = load_pipeline(EXAMPLES / name)
    assert config.trainer.output_dir.parts[0] == "runs"
    if config.trainer.budget_unit == "env_steps":
        steps = 4 * config.env.num_envs * 16
    else:  # an offline optimizer (dpo): a few gradient steps over the example's dataset
        steps = 16
    update: dict = {"trainer": config.trainer.model_copy(update={
        "total_steps": steps, "eval_every": steps, "eval_episodes": 8, "output_dir": tmp_path,
        "warm_start": None,
    })}
    if config.dataset is not None:  # dataset paths in the examples are relative to the repository root
        path = Path(config.dataset.params["path"])
        params = {**config.dataset.params, "path": str(path if path.is_absolute() else EXAMPLES.parent / path)}
        update["dataset"] = config.dataset.model_copy(update={"params": params})
    short = config.model_copy(update=update)
    summary = Trainer(short, progress=False).run()
    assert summary["steps"] >= steps
    assert 0 <= summary["eval"]["success"] <= 1
