"""The optimizer: learning from pairs, the frozen reference, the variants, progress, acting and the errors users hit."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from polyfuse.datasets import PreferenceBatch
from polyfuse.errors import PolyfuseError
from polyfuse.training import Budget
from polyfuse_dpo.dpo import DPO
from polyfuse_dpo.plugin import DPOConfig

SMALL = {"batch_size": 16, "learning_rate": 3e-3, "hidden_sizes": [16]}
METRICS = {"loss", "accuracy", "margin", "reward_chosen", "reward_rejected", "kl_to_reference", "prob_chosen",
           "prob_rejected", "epoch"}


def make_dpo(pipeline: Any, **params: Any) -> DPO:
    dpo = DPO(DPOConfig(**{**SMALL, **params}))
    dpo.set_budget(Budget(1000, "gradient_steps"))
    dpo.setup(pipeline)
    return dpo


def accuracy(dpo: DPO, helpers: Any, action_start: int = 0) -> float:
    observations, targets = helpers.bandit_observations(200)
    return float(np.mean(dpo.act(observations) == targets + action_start))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def warm_start(dpo: DPO) -> None:
    """What the trainer's behaviour cloning does before the first iterate: change the policy."""
    with torch.no_grad():
        for parameter in dpo.trainable_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))


# --- learning ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [{"loss": "dpo"}, {"loss": "ipo", "beta": 0.1}, {"loss": "conservative", "label_smoothing": 0.1}],
    ids=["dpo", "ipo", "conservative"],
)
def test_each_variant_learns_the_preferred_actions(
    make_pairs_pipeline: Any, pairs_helpers: Any, params: dict[str, Any]
) -> None:
    dpo = make_dpo(make_pairs_pipeline(pairs=64, action_start=2), **params)
    before = accuracy(dpo, pairs_helpers, action_start=2)
    metrics = [dpo.iterate() for _ in range(250)]
    assert set(metrics[-1]) == METRICS
    assert all(np.isfinite(list(m.values())).all() for m in metrics)
    assert accuracy(dpo, pairs_helpers, action_start=2) >= 0.95 > before + 0.3
    late = {key: np.mean([m[key] for m in metrics[-10:]]) for key in METRICS}
    assert late["accuracy"] > 0.9 and late["margin"] > 0 and late["reward_chosen"] > late["reward_rejected"]
    assert late["loss"] < np.mean([m["loss"] for m in metrics[:5]])
    assert late["kl_to_reference"] > 0 and late["prob_chosen"] > late["prob_rejected"]


def test_the_first_metrics_are_those_of_the_policy_equal_to_its_reference(make_pairs_pipeline: Any) -> None:
    metrics = make_dpo(make_pairs_pipeline()).iterate()
    assert metrics["margin"] == 0.0 and metrics["kl_to_reference"] == 0.0 and metrics["accuracy"] == 0.0
    assert metrics["loss"] == pytest.approx(np.log(2))


def test_ipo_stops_at_its_target_margin(make_pairs_pipeline: Any) -> None:
    """IPO pulls every pair's log-ratio margin to 1/(2 beta) = 1 and no further; DPO keeps pushing."""
    ipo = make_dpo(make_pairs_pipeline(pairs=32), loss="ipo", beta=0.5, batch_size=32)
    dpo = make_dpo(make_pairs_pipeline(pairs=32), loss="dpo", beta=0.5, batch_size=32)
    for _ in range(300):
        ipo_metrics, dpo_metrics = ipo.iterate(), dpo.iterate()
    assert ipo_metrics["margin"] / 0.5 == pytest.approx(1.0, abs=0.1)
    assert dpo_metrics["margin"] / 0.5 > 3.0


# --- the reference ----------------------------------------------------------------------------------------------


def test_the_reference_is_the_policy_at_the_first_iterate_and_stays_frozen(make_pairs_pipeline: Any) -> None:
    dpo = make_dpo(make_pairs_pipeline(frozen_text=True))
    warm_start(dpo)
    warm = snapshot(dpo.policy)
    dpo.iterate()
    assert same(snapshot(dpo.reference), warm)
    for _ in range(20):
        dpo.iterate()
    assert same(snapshot(dpo.reference), warm)
    assert not same(snapshot(dpo.policy), warm)
    assert not any(p.requires_grad for p in dpo.reference.parameters())
    assert all(p.grad is None for p in dpo.reference.parameters())
    # frozen encoders are shared, not copied; trainable ones are the reference's own
    assert dpo.reference.trunk.encoders["text"] is dpo.policy.trunk.encoders["text"]
    assert dpo.reference.trunk.encoders["vector"] is not dpo.policy.trunk.encoders["vector"]
    assert {id(p) for p in dpo.trainable_parameters()}.isdisjoint(id(p) for p in dpo.reference.parameters())


# --- progress, shuffling, acting ------------------------------------------------------------------------------


def test_progress_counts_gradient_steps_and_pairs_and_epochs_cover_every_pair_once(make_pairs_pipeline: Any) -> None:
    pipeline = make_pairs_pipeline(pairs=25)
    seen: list[np.ndarray] = []
    original = pipeline.dataset.batch
    pipeline.dataset.batch = lambda rows: (seen.append(np.array(rows)), original(rows))[1]
    dpo = make_dpo(pipeline, batch_size=10, gradient_steps=3)
    metrics = dpo.iterate()
    assert dpo.progress.as_dict() == {"env_steps": 0, "gradient_steps": 3, "samples": 25}
    assert [len(rows) for rows in seen] == [10, 10, 5]  # a smaller last batch closes the epoch
    assert sorted(np.concatenate(seen).tolist()) == list(range(25))
    assert metrics["epoch"] == 1.0
    dpo.iterate()
    assert dpo.progress.as_dict() == {"env_steps": 0, "gradient_steps": 6, "samples": 50}
    assert sorted(np.concatenate(seen[3:]).tolist()) == list(range(25))
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))  # reshuffled
    assert dpo.epochs == 2 and dpo.iterations == 2


def test_act_returns_the_spaces_actions_and_samples_from_its_own_generator(
    make_pairs_pipeline: Any, pairs_helpers: Any
) -> None:
    dpo = make_dpo(make_pairs_pipeline(pairs=64, action_start=2))
    for _ in range(250):
        dpo.iterate()
    observations, targets = pairs_helpers.bandit_observations(64)
    greedy = dpo.act(observations)
    assert greedy.dtype == np.int64 and greedy.shape == (64,)
    np.testing.assert_array_equal(greedy, targets + 2)
    sampled = dpo.act(observations, deterministic=False)
    assert set(sampled.tolist()) <= {2, 3, 4, 5}
    logits = dpo.action_logits(observations)
    assert logits.shape == (64, 4) and logits.requires_grad
    state = dpo.rng["shuffle"].bit_generator.state
    dpo.act(observations, deterministic=False)
    assert dpo.rng["shuffle"].bit_generator.state == state  # acting leaves training's randomness alone


def test_trainable_parameters_are_the_policys_without_frozen_encoders(make_pairs_pipeline: Any) -> None:
    dpo = make_dpo(make_pairs_pipeline(frozen_text=True))
    trainable = {id(p) for p in dpo.trainable_parameters()}
    assert trainable == {id(p) for p in dpo.policy.parameters() if p.requires_grad}
    assert trainable.isdisjoint(id(p) for p in dpo.policy.trunk.encoders["text"].parameters())


# --- errors -------------------------------------------------------------------------------------------------------


def test_a_pipeline_without_a_dataset_is_told_to_add_one(make_pipeline: Any) -> None:
    with pytest.raises(PolyfuseError, match=r"dataset: dpo learns offline .*dataset: \{name: preferences"):
        make_dpo(make_pipeline())


@pytest.mark.parametrize(
    "space",
    [gymnasium.spaces.MultiDiscrete([4, 2]), gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)],
    ids=["multidiscrete", "box"],
)
def test_a_non_discrete_action_space_is_refused(make_pairs_pipeline: Any, space: Any) -> None:
    with pytest.raises(PolyfuseError, match=r"optimizer.name: dpo compares two actions of a Discrete action space"):
        make_dpo(make_pairs_pipeline(action_space=space))


def test_pairs_of_another_action_space_are_refused(make_pairs_pipeline: Any) -> None:
    with pytest.raises(PolyfuseError, match=r"dataset.params.path: the pairs compare actions of Discrete\(4\).*"
                                            r"Discrete\(2\)"):
        make_dpo(make_pairs_pipeline(action_space=gymnasium.spaces.Discrete(2)))


class LoosePairs:
    """A plugin's preference dataset that declares no action space, with one action out of range."""

    def __init__(self, pairs: Any, bad: int) -> None:
        self.pairs = pairs
        self.chosen = self.pairs.chosen.copy()
        self.chosen[5] = bad
        self.rejected = self.pairs.rejected

    def __len__(self) -> int:
        return len(self.chosen)

    def batch(self, rows: np.ndarray) -> PreferenceBatch:
        return PreferenceBatch(self.pairs.observations.take(rows), self.chosen[rows], self.rejected[rows])


@pytest.mark.parametrize("bad", [4, -1])
def test_actions_that_do_not_fit_are_refused_naming_the_pair(
    make_pairs_pipeline: Any, pairs_helpers: Any, bad: int
) -> None:
    dataset = LoosePairs(pairs_helpers.bandit_pairs(pairs=8), bad)
    pipeline = make_pairs_pipeline(dataset=dataset, action_space=gymnasium.spaces.Discrete(4))
    with pytest.raises(PolyfuseError, match=rf"pair 6's chosen action {bad} is not an action of .*Discrete\(4\)"):
        make_dpo(pipeline)


def test_a_dataset_that_is_not_preference_pairs_is_refused(make_pairs_pipeline: Any) -> None:
    class Rows:
        def __len__(self) -> int:
            return 3

    with pytest.raises(PolyfuseError, match="dataset: dpo reads preference pairs .* Rows without batch"):
        make_dpo(make_pairs_pipeline(dataset=Rows(), action_space=gymnasium.spaces.Discrete(4)))


def test_an_empty_dataset_is_refused(make_pairs_pipeline: Any) -> None:
    with pytest.raises(PolyfuseError, match="holds no preference pairs"):
        make_dpo(make_pairs_pipeline(pairs=0))
