"""Checkpoints and seeding: a resumed run continues exactly; the same seed gives the same run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.training import Budget
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse_ppo.plugin import PPOConfig
from polyfuse_ppo.ppo import PPO
from polyfuse.rl.testing import assert_checkpointable

SMALL = dict(n_steps=8, n_epochs=2, batch_size=8, learning_rate=1e-3, hidden_sizes=[16])


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def parameters(ppo: PPO) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in ppo.model.state_dict().items()}


def assert_same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run(pipeline: Any, iterations: int, **params: Any) -> tuple[PPO, list[dict[str, float]]]:
    ppo = PPO(PPOConfig(**{**SMALL, **params}))
    ppo.set_budget(Budget(400))
    ppo.setup(pipeline)
    return ppo, [ppo.iterate() for _ in range(iterations)]


@pytest.mark.parametrize(
    "params",
    [
        dict(kl_coef=0.5, lr_schedule="linear", clip_range_vf=0.2),
        dict(shared_trunk=False, target_kl=0.05),
    ],
    ids=["kl-linear-vfclip", "separate-trunks-targetkl"],
)
def test_resuming_from_a_checkpoint_gives_the_same_next_updates(
    helpers: Any, tmp_path: Path, params: dict[str, Any]
) -> None:
    envs = helpers.make_vector_env("chain", num_envs=3, seed=5, max_steps=4)  # truncations happen
    original, _ = run(helpers.pipeline_for(envs, seed=11), 2, **params)
    save_checkpoint(tmp_path, {"optimizer": original.state_dict()})
    paused_envs = envs.snapshot()

    continued = [original.iterate() for _ in range(2)]
    expected_parameters = parameters(original)

    # A new process: another pipeline seed (the trainer derives one on resume), then the checkpoint.
    resumed = PPO(PPOConfig(**{**SMALL, **params}))
    resumed.set_budget(Budget(400))
    resumed.setup(helpers.pipeline_for(paused_envs, seed=999))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint")["optimizer"])
    after_resume = [resumed.iterate() for _ in range(2)]

    for a, b in zip(continued, after_resume):
        assert same_metrics(a, b), (a, b)
    assert_same_parameters(expected_parameters, parameters(resumed))
    assert resumed.iterations == original.iterations == 4
    assert resumed.progress == original.progress
    if params.get("kl_coef"):
        assert "kl_to_reference" in after_resume[0]
        assert_same_parameters(original.reference.state_dict(), resumed.reference.state_dict())


def test_without_loading_the_state_the_next_update_differs(helpers: Any) -> None:
    """The round trip above is meaningful: a fresh optimizer on the same envs does not match."""
    envs = helpers.make_vector_env("chain", num_envs=3, seed=5, max_steps=4)
    original, _ = run(helpers.pipeline_for(envs, seed=11), 2)
    paused_envs = envs.snapshot()
    expected = original.iterate()
    fresh, [got] = run(helpers.pipeline_for(paused_envs, seed=11), 1)
    assert not same_metrics(expected, got)


def test_reference_policy_survives_a_checkpoint_without_its_shared_frozen_encoders(
    make_pipeline: Any, tmp_path: Path
) -> None:
    ppo, _ = run(make_pipeline(frozen_text=True), 1, kl_coef=0.1)
    state = ppo.state_dict()
    assert state["reference"] is not None
    assert not any(key.startswith("trunk.encoders.text.") for key in state["reference"])
    assert any(key.startswith("trunk.encoders.vector.") for key in state["reference"])
    save_checkpoint(tmp_path, state)

    resumed = PPO(PPOConfig(**SMALL, kl_coef=0.1))
    resumed.setup(make_pipeline(frozen_text=True, seed=3))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint"))
    assert resumed.reference.trunk.encoders["text"] is resumed.model.policy.trunk.encoders["text"]
    assert_same_parameters(ppo.reference.state_dict(), resumed.reference.state_dict())


def test_same_seed_same_run_and_another_seed_another_run(make_pipeline: Any) -> None:
    first, first_metrics = run(make_pipeline("chain", seed=2), 3, kl_coef=0.1)
    second, second_metrics = run(make_pipeline("chain", seed=2), 3, kl_coef=0.1)
    assert all(same_metrics(a, b) for a, b in zip(first_metrics, second_metrics))
    assert_same_parameters(parameters(first), parameters(second))

    other, _ = run(make_pipeline("chain", seed=3), 3, kl_coef=0.1)
    assert any(not torch.equal(a, b) for a, b in zip(parameters(first).values(), parameters(other).values()))


def test_the_seed_not_the_global_generator_decides(make_pipeline: Any) -> None:
    torch.manual_seed(123)
    first, _ = run(make_pipeline(seed=4), 1)
    torch.manual_seed(456)
    second, _ = run(make_pipeline(seed=4), 1)
    assert_same_parameters(parameters(first), parameters(second))


def test_state_dict_holds_only_checkpointable_values(make_pipeline: Any) -> None:
    ppo, _ = run(make_pipeline(), 1, kl_coef=0.1)
    state = ppo.state_dict()
    assert set(state) == {"model", "optimizer", "reference", "counters", "rng", "format", "config"}
    assert state["counters"] == {"env_steps": 32, "gradient_steps": 8, "samples": 64, "iterations": 1}
    assert set(state["rng"]) == {"rollout", "shuffle", "act"}
    assert_checkpointable(state)


def test_load_state_dict_refuses_another_format_and_needs_setup(make_pipeline: Any) -> None:
    ppo, _ = run(make_pipeline(), 1)
    state = ppo.state_dict()
    with pytest.raises(PolyfuseError, match="format"):
        ppo.load_state_dict({**state, "format": 99})
    with pytest.raises(RuntimeError, match="setup"):
        PPO(PPOConfig()).load_state_dict(state)
