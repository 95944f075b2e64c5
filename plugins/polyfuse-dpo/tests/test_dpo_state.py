"""Checkpoints, seeding and init_from: a resumed run continues exactly; an earlier run's policy is a starting point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.rl.heads import ActorCritic
from polyfuse.training import Budget
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint
from polyfuse_dpo.dpo import DPO
from polyfuse_dpo.plugin import DPOConfig
from polyfuse.rl.testing import assert_checkpointable

SMALL = {"batch_size": 16, "learning_rate": 3e-3, "hidden_sizes": [16]}


def make_dpo(pipeline: Any, **params: Any) -> DPO:
    dpo = DPO(DPOConfig(**{**SMALL, **params}))
    dpo.set_budget(Budget(1000, "gradient_steps"))
    dpo.setup(pipeline)
    return dpo


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def warm_start(dpo: DPO, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in dpo.trainable_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


# --- resume -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"loss": "conservative", "label_smoothing": 0.2, "gradient_steps": 2}, {"loss": "ipo", "beta": 0.2}],
    ids=["dpo", "conservative", "ipo"],
)
def test_resuming_from_a_checkpoint_gives_the_same_next_updates(
    make_pairs_pipeline: Any, tmp_path: Path, params: dict[str, Any]
) -> None:
    original = make_dpo(make_pairs_pipeline(pairs=40, seed=11, frozen_text=True), **params)
    warm_start(original)
    for _ in range(3):  # 40 pairs in batches of 16: the checkpoint falls inside an epoch
        original.iterate()
    save_checkpoint(tmp_path, {"optimizer": original.state_dict()})
    continued = [original.iterate() for _ in range(4)]

    # A new process: another pipeline seed (the trainer derives one on resume), then the checkpoint.
    resumed = make_dpo(make_pairs_pipeline(pairs=40, seed=999, frozen_text=True), **params)
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint")["optimizer"])
    after_resume = [resumed.iterate() for _ in range(4)]

    assert continued == after_resume
    assert_same(snapshot(original.policy), snapshot(resumed.policy))
    assert_same(snapshot(original.reference), snapshot(resumed.reference))
    assert resumed.progress == original.progress and resumed.iterations == original.iterations == 7
    assert resumed.epochs == original.epochs


def test_without_loading_the_state_the_next_update_differs(make_pairs_pipeline: Any) -> None:
    """The round trip above is meaningful: a fresh optimizer on the same pairs does not match."""
    original = make_dpo(make_pairs_pipeline(pairs=40, seed=11))
    for _ in range(3):
        original.iterate()
    fresh = make_dpo(make_pairs_pipeline(pairs=40, seed=11))
    assert original.iterate() != fresh.iterate()


def test_a_checkpoint_saved_before_the_first_iterate_takes_the_reference_after_resume(
    make_pairs_pipeline: Any, tmp_path: Path
) -> None:
    """Stopped between warm start and the first iterate: the reference is the warm-started policy all the same."""
    dpo = make_dpo(make_pairs_pipeline())
    warm_start(dpo)
    warm = snapshot(dpo.policy)
    state = dpo.state_dict()
    assert state["reference"] is None
    save_checkpoint(tmp_path, state)

    resumed = make_dpo(make_pairs_pipeline(seed=5))
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint"))
    resumed.iterate()
    assert_same(snapshot(resumed.reference), warm)


def test_the_reference_is_saved_without_the_frozen_encoders_it_shares(make_pairs_pipeline: Any) -> None:
    dpo = make_dpo(make_pairs_pipeline(frozen_text=True))
    dpo.iterate()
    state = dpo.state_dict()
    assert not any(key.startswith("trunk.encoders.text.") for key in state["reference"])
    assert any(key.startswith("trunk.encoders.vector.") for key in state["reference"])
    assert any(key.startswith("trunk.encoders.text.") for key in state["policy"])


def test_state_dict_holds_only_checkpointable_values(make_pairs_pipeline: Any) -> None:
    dpo = make_dpo(make_pairs_pipeline(pairs=40), gradient_steps=2)
    dpo.iterate()
    state = dpo.state_dict()
    assert set(state) == {"format", "config", "counters", "rng", "optimizer", "policy", "reference", "shuffle"}
    assert state["counters"] == {"env_steps": 0, "gradient_steps": 2, "samples": 32, "iterations": 1}
    assert set(state["rng"]) == {"shuffle", "act"}
    assert state["shuffle"]["cursor"] == 32 and state["shuffle"]["epochs"] == 1
    assert sorted(state["shuffle"]["order"].tolist()) == list(range(40))
    assert_checkpointable(state)


def test_load_state_dict_refuses_another_format_another_dataset_and_needs_setup(make_pairs_pipeline: Any) -> None:
    dpo = make_dpo(make_pairs_pipeline(pairs=40))
    dpo.iterate()
    state = dpo.state_dict()
    with pytest.raises(PolyfuseError, match="format"):
        dpo.load_state_dict({**state, "format": 99})
    with pytest.raises(PolyfuseError, match="saved while training on 40 pairs, and the dataset now holds 30"):
        make_dpo(make_pairs_pipeline(pairs=30)).load_state_dict(state)
    with pytest.raises(RuntimeError, match="setup"):
        DPO(DPOConfig()).load_state_dict(state)


# --- seeding ------------------------------------------------------------------------------------------------------


def test_same_seed_same_run_and_another_seed_another_run(make_pairs_pipeline: Any) -> None:
    def run(seed: int) -> tuple[DPO, list[dict[str, float]]]:
        dpo = make_dpo(make_pairs_pipeline(seed=seed))
        return dpo, [dpo.iterate() for _ in range(5)]

    (first, first_metrics), (second, second_metrics) = run(2), run(2)
    assert first_metrics == second_metrics
    assert_same(snapshot(first.policy), snapshot(second.policy))
    _other, other_metrics = run(3)
    assert other_metrics != first_metrics


def test_the_seed_not_the_global_generator_decides(make_pairs_pipeline: Any) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    first = make_dpo(make_pairs_pipeline(seed=4))
    first.iterate()
    torch.manual_seed(456)
    np.random.seed(456)
    second = make_dpo(make_pairs_pipeline(seed=4))
    second.iterate()
    assert_same(snapshot(first.policy), snapshot(second.policy))


# --- init_from ----------------------------------------------------------------------------------------------------


def save_run(folder: Path, optimizer: str, optimizer_state: dict[str, Any]) -> Path:
    """A run folder as the trainer leaves it (only what init_from reads: the config and the optimizer state)."""
    save_checkpoint(folder, {"config": {"optimizer": {"name": optimizer, "params": {}}}, "trainer": {},
                             "optimizer": optimizer_state})
    return folder


def test_init_from_a_dpo_run_starts_the_policy_and_the_reference_there(
    make_pairs_pipeline: Any, tmp_path: Path
) -> None:
    earlier = make_dpo(make_pairs_pipeline(seed=1))
    for _ in range(5):
        earlier.iterate()
    run = save_run(tmp_path / "runs" / "earlier", "dpo", earlier.state_dict())

    for path in (run, run / "checkpoint"):  # the run folder, or its checkpoint folder
        dpo = make_dpo(make_pairs_pipeline(seed=2), init_from=path)
        assert dpo.init_from_optimizer == "dpo"
        assert_same(snapshot(dpo.policy), snapshot(earlier.policy))
        dpo.iterate()
        assert_same(snapshot(dpo.reference), snapshot(earlier.policy))


def test_init_from_an_actor_critic_run_takes_its_policy_and_keeps_this_runs_frozen_encoders(
    make_pairs_pipeline: Any, helpers: Any, tmp_path: Path
) -> None:
    pipeline = make_pairs_pipeline(frozen_text=True)
    model = ActorCritic(lambda: helpers.make_network(pipeline.observation_space, frozen_text=True), 4,
                        shared_trunk=False, hidden_sizes=[16], activation="relu", ortho_init=True)
    state = model.state_dict()
    state["policy.trunk.encoders.text.layer.weight"] = torch.zeros_like(state["policy.trunk.encoders.text.layer.weight"])
    run = save_run(tmp_path / "ppo-run", "ppo", {"model": state, "format": 2})

    dpo = make_dpo(pipeline, init_from=run)
    assert dpo.init_from_optimizer == "ppo"
    policy = snapshot(dpo.policy)
    expected = snapshot(model.policy)
    for key, value in expected.items():
        if key.startswith("trunk.encoders.text."):
            assert not torch.equal(policy[key], torch.zeros_like(value))  # the frozen encoder stays this run's
        else:
            assert torch.equal(policy[key], value), key


def test_init_from_a_run_whose_policy_does_not_fit_is_refused(make_pairs_pipeline: Any, tmp_path: Path) -> None:
    earlier = make_dpo(make_pairs_pipeline(), hidden_sizes=[8])
    run = save_run(tmp_path / "small", "dpo", earlier.state_dict())
    with pytest.raises(PolyfuseError, match=r"init_from: the policy of .*small \(a dpo run\) does not fit"):
        make_dpo(make_pairs_pipeline(), init_from=run)


def test_init_from_a_run_without_a_policy_is_refused(tmp_path: Path, make_pairs_pipeline: Any) -> None:
    run = save_run(tmp_path / "dqn-run", "dqn", {"q_network": {"head.weight": torch.zeros(4, 4)}})
    with pytest.raises(PolyfuseError, match=r"optimizer 'dqn', which has no policy network .* ppo, a2c or dpo"):
        make_dpo(make_pairs_pipeline(), init_from=run)


@pytest.mark.parametrize("exists", [False, True])
def test_init_from_a_folder_without_a_checkpoint_is_refused(
    tmp_path: Path, make_pairs_pipeline: Any, exists: bool
) -> None:
    folder = tmp_path / "runs" / "nothing"
    if exists:
        folder.mkdir(parents=True)
    state = "holds no checkpoint" if exists else "does not exist"
    with pytest.raises(PolyfuseError, match=rf"optimizer.params.init_from: .*nothing {state}"):
        make_dpo(make_pairs_pipeline(), init_from=folder)
