"""The repository's RLHF example configs are valid, and the synthetic-feedback one trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from polyfuse.config import load_pipeline
from polyfuse.training.trainer import Trainer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RLHF = sorted(EXAMPLES.glob("*rlhf*.yaml"))


def needs(registry: Any, path: Path) -> None:
    """Skip unless the plugins the example names (its optimizer, polyfuse-sbert) are installed."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    optimizer = raw["optimizer"]["name"]
    if optimizer not in registry.names("optimizers") or "sbert" not in registry.names("encoders"):
        pytest.skip(f"{path.name} needs polyfuse-{optimizer} and polyfuse-sbert")


def test_there_are_rlhf_examples() -> None:
    assert len(RLHF) >= 4, RLHF


@pytest.mark.parametrize("path", RLHF, ids=lambda p: p.name)
def test_example_is_valid(path: Path, make_registry: Any) -> None:
    registry = make_registry()
    needs(registry, path)
    config = load_pipeline(path, registry)
    assert config.reward.name == "preference-model" and config.trainer.output_dir.parts[0] == "runs"


def test_the_synthetic_example_trains_briefly(make_registry: Any, tmp_path: Path) -> None:
    registry = make_registry()
    needs(registry, EXAMPLES / "digits_vqa_rlhf.yaml")
    config = load_pipeline(EXAMPLES / "digits_vqa_rlhf.yaml", registry)
    trainer = config.trainer.model_copy(update={"total_steps": 2048, "eval_every": 2048, "eval_episodes": 16,
                                                "reward_update_every": 256, "output_dir": tmp_path})
    summary = Trainer(config.model_copy(update={"trainer": trainer}), registry, progress=False).run()
    assert summary["steps"] == 2048 and (tmp_path / "feedback.sqlite").is_file()
