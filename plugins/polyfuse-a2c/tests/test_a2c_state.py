"""A checkpointed A2C resumes exactly where it was: parameters, optimizer state, generators and counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from polyfuse.training import Budget
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse_a2c.a2c import A2C
from polyfuse_a2c.plugin import A2CConfig

SETTINGS = {
    "a2c-rmsprop": {"n_steps": 4, "ent_coef": 0.01},
    "adam-linear-lr-separate-critic": {
        "n_steps": 4, "optimizer": "adam", "lr_schedule": "linear", "shared_trunk": False,
    },
    "reinforce-with-baseline": {"n_steps": 10, "returns": "monte-carlo", "normalize_advantage": True},
    "reinforce": {"n_steps": 10, "returns": "monte-carlo", "baseline": False},
}


def started(envs: Any, helpers: Any, seed: int, params: dict[str, Any]) -> A2C:
    a2c = A2C(A2CConfig(hidden_sizes=[16], learning_rate=3e-3, **params))
    a2c.set_budget(Budget(1000))
    a2c.setup(helpers.pipeline_for(envs, seed=seed))
    return a2c


def weights(a2c: A2C) -> list[torch.Tensor]:
    return [tensor.clone() for tensor in a2c.model.state_dict().values()]


@pytest.mark.parametrize("params", SETTINGS.values(), ids=SETTINGS.keys())
def test_resumed_run_matches_the_uninterrupted_one(helpers: Any, tmp_path: Path, params: dict[str, Any]) -> None:
    envs = helpers.make_vector_env("chain", num_envs=3, seed=7, max_steps=4)  # episodes end in every way
    first = started(envs, helpers, 3, params)
    for _ in range(3):
        first.iterate()
    save_checkpoint(tmp_path, first.state_dict())
    envs_then = envs.snapshot()
    expected = repr([first.iterate() for _ in range(3)])  # repr: exact, and NaN equals NaN

    second = started(envs_then, helpers, 12345, params)  # another seed: everything must come from the state
    second.load_state_dict(load_checkpoint(tmp_path / "checkpoint"))
    assert repr([second.iterate() for _ in range(3)]) == expected
    assert all(torch.equal(a, b) for a, b in zip(weights(first), weights(second)))
    assert (second.progress, second.iterations) == (first.progress, 6)
    assert set(second.state_dict()) == {"format", "config", "counters", "rng", "optimizer", "model"}

    unrestored = started(envs_then.snapshot(), helpers, 3, params)
    assert repr([unrestored.iterate() for _ in range(3)]) != expected
