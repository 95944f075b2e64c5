"""Held-out evaluation in both modes: a policy whose greedy and sampled success differ, seeding, the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from polyfuse.config import EnvConfig, ModalityConfig
from polyfuse.errors import PolyfuseError
from polyfuse.rl import distributions
from polyfuse.training.compatibility import check_compatible
from polyfuse.training.eval_report import eval_metrics, nest
from polyfuse.training.evaluation import Episodes, Evaluator, seeded_sampling

CORRIDOR = "polyfuse-test/StuckCorridor-v0"
STEPS = 10
ADVANCE = 0.3


class StuckCorridor(gymnasium.Env):
    """One step from the goal, forever: ``advance`` (action 1) succeeds, ``wait`` (action 0) changes nothing.

    A policy that prefers waiting never gets there greedily, and sampling escapes within ``STEPS``
    steps with probability ``1 - (1 - p_advance) ** STEPS``: the looping greedy policies of grid worlds, exactly.
    """

    observation_space = spaces.Dict({"position": spaces.Box(0.0, 1.0, (1,), np.float32)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self.steps = 0
        return {"position": np.zeros(1, np.float32)}, {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        self.steps += 1
        arrived = int(action) == 1
        return {"position": np.full(1, float(arrived), np.float32)}, float(arrived), arrived, self.steps >= STEPS, {}


if CORRIDOR not in gymnasium.registry:
    gymnasium.register(CORRIDOR, entry_point=StuckCorridor)


class FixedPolicy:
    """Waits with probability 0.7 and advances with 0.3 whatever it sees; samples as polyfuse's optimizers do."""

    def __init__(self, seed: int = 0) -> None:
        self.logits = torch.log(torch.tensor([1.0 - ADVANCE, ADVANCE]))
        self.rng = {"act": torch.Generator().manual_seed(seed)}

    def act(self, observations: dict[str, Any], deterministic: bool = True) -> np.ndarray:
        logits = self.logits.expand(len(observations["position"]), 2)
        actions = distributions.mode(logits, (2,)) if deterministic else \
            distributions.sample(logits, (2,), self.rng["act"])
        return actions[:, 0].numpy()

    def reset_memory(self, batch: int) -> None:
        """Memoryless: nothing to forget."""


def test_greedy_loops_where_sampling_escapes() -> None:
    evaluator = Evaluator(EnvConfig(id=CORRIDOR), episodes=200)
    try:
        results = evaluator.evaluate(FixedPolicy(), ("greedy", "sampled"))
    finally:
        evaluator.close()
    metrics = eval_metrics({None: results}, ("greedy", "sampled"))
    assert metrics["eval/greedy/success"] == 0.0 and metrics["eval/greedy/length"] == STEPS
    assert metrics["eval/greedy/success_low"] == 0.0 and metrics["eval/greedy/success_high"] < 0.02
    expected = 1 - (1 - ADVANCE) ** STEPS  # 0.9718
    assert metrics["eval/sampled/success_low"] <= expected <= metrics["eval/sampled/success_high"]
    assert metrics["eval/sampled/return_low"] <= expected <= metrics["eval/sampled/return_high"]
    assert metrics["eval/sampled/success_low"] > 0.9
    # the primary mode is the first asked for
    assert metrics["eval/success"] == 0.0 and metrics["eval/episodes"] == 200
    swapped = eval_metrics({None: results}, ("sampled", "greedy"))
    assert swapped["eval/success"] == metrics["eval/sampled/success"]


def test_sampled_evaluation_is_reproducible_and_leaves_the_policys_stream_alone() -> None:
    policy = FixedPolicy(seed=5)
    before = policy.rng["act"].get_state()
    evaluator = Evaluator(EnvConfig(id=CORRIDOR), episodes=70)  # rounds of 32, 32 and 6
    try:
        first = evaluator.evaluate(policy, ("sampled",))["sampled"]
        second = evaluator.evaluate(FixedPolicy(seed=99), ("sampled",))["sampled"]
        rounds = Episodes()
        for index in reversed(range(evaluator.rounds)):  # any order (any process): the same episodes
            part = evaluator.play_round(policy, "sampled", index)
            rounds = Episodes(part.returns + rounds.returns, part.lengths + rounds.lengths,
                              part.successes + rounds.successes)
    finally:
        evaluator.close()
    assert len(first) == 70 and first == second == rounds
    assert torch.equal(policy.rng["act"].get_state(), before), "evaluation must not move training's stream"
    assert len(set(first.lengths)) > 1, "sampled episodes should differ from one another"


def test_seeded_sampling_swaps_numpy_generators_too_and_ignores_actors_without_one() -> None:
    actor = type("Actor", (), {})()
    actor.rng = {"act": np.random.default_rng(3)}
    own = actor.rng["act"]
    with seeded_sampling(actor, 11):
        drawn = actor.rng["act"].random()
    assert actor.rng["act"] is own and drawn == np.random.default_rng(11).random()
    plain = object()
    with seeded_sampling(plain, 11):
        pass


def episodes(successes: list[bool], returns: list[float] | None = None) -> Episodes:
    returns = returns if returns is not None else [float(s) for s in successes]
    return Episodes(returns, [1] * len(successes), successes)


def test_suite_figures_per_environment_mean_and_iqm() -> None:
    results = {
        "a": {"greedy": episodes([True] * 10)},
        "b": {"greedy": episodes([True] * 5 + [False] * 5)},
        "c": {"greedy": episodes([False] * 10)},
        "d": {"greedy": episodes([True] * 2 + [False] * 8)},
    }
    metrics = eval_metrics(results, ("greedy",))
    assert metrics["eval/suite/b/greedy/success"] == 0.5
    assert metrics["eval/greedy/success"] == pytest.approx((1 + 0.5 + 0 + 0.2) / 4)
    assert metrics["eval/greedy/success_iqm"] == pytest.approx((0.2 + 0.5) / 2)
    assert metrics["eval/greedy/success_iqm_low"] <= metrics["eval/greedy/success_iqm"] \
        <= metrics["eval/greedy/success_iqm_high"]
    assert metrics["eval/greedy/success_low"] < metrics["eval/greedy/success"] < metrics["eval/greedy/success_high"]
    assert metrics["eval/success"] == metrics["eval/greedy/success"] and metrics["eval/envs"] == 4
    summary = nest(metrics)
    assert summary["suite"]["a"]["greedy"]["success"] == 1.0 and summary["greedy"]["success_iqm"] == 0.35
    assert summary["success"] == metrics["eval/success"] and summary["episodes"] == 10


def test_incompatible_observations_name_the_modality() -> None:
    image = spaces.Box(0, 255, (7, 7, 3), np.uint8)
    trained = spaces.Dict({"image": image, "mission": spaces.Text(64)})
    modalities = {"image": ModalityConfig(encoder="small-cnn"), "text": ModalityConfig(key="mission", encoder="sbert")}
    check_compatible(modalities, trained, spaces.Discrete(7), spaces.Dict({**trained.spaces, "extra": image}),
                     spaces.Discrete(7), "same")
    wider = spaces.Dict({"image": spaces.Box(0, 255, (9, 9, 3), np.uint8), "mission": spaces.Text(64)})
    with pytest.raises(PolyfuseError, match=r"modality 'image' \(observation key 'image'\) is Box.*\(9, 9, 3\)"):
        check_compatible(modalities, trained, spaces.Discrete(7), wider, spaces.Discrete(7), "BabyAI-Wide")
    with pytest.raises(PolyfuseError, match="modality 'text' reads observation key 'mission', which X lacks"):
        check_compatible(modalities, trained, spaces.Discrete(7), spaces.Dict({"image": image}),
                         spaces.Discrete(7), "X")
    with pytest.raises(PolyfuseError, match="action space is Discrete\\(3\\)"):
        check_compatible(modalities, trained, spaces.Discrete(7), trained, spaces.Discrete(3), "Y")


def test_learning_curve_draws_both_modes_with_bands_and_reads_older_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from polyfuse.training import plotting

    drawn: list[Figure] = []
    original = Figure.savefig

    def keep(figure: Figure, *args: Any, **kwargs: Any) -> None:
        drawn.append(figure)
        original(figure, *args, **kwargs)

    results = {None: {"greedy": episodes([False] * 8), "sampled": episodes([True, False] * 4)}}
    records = [{"kind": "train", "step": 5, "train/success": 0.5, "train/return": 0.5},
               *({"kind": "eval", "step": step, **eval_metrics(results, ("greedy", "sampled"))} for step in (0, 10))]
    older = [{"kind": "eval", "step": 0, "eval/success": 0.2, "eval/return": 0.2}]
    monkeypatch.setattr(Figure, "savefig", keep)
    plotting.plot_learning_curve(records, tmp_path / "modes.png")
    plotting.plot_learning_curve(older, tmp_path / "older.png")
    modes_axes = drawn[0].axes
    for axes in modes_axes:  # success and return: a band per mode, and a line per mode besides train
        assert sum(isinstance(c, PolyCollection) for c in axes.collections) == 2
        assert [line.get_label() for line in axes.lines] == ["train (recent episodes)", "held-out, greedy",
                                                             "held-out, sampled"]
    assert [line.get_label() for line in drawn[1].axes[0].lines] == ["train (recent episodes)", "held-out"]
    assert (tmp_path / "modes.png").stat().st_size > 0 and (tmp_path / "older.png").stat().st_size > 0


class RememberingPolicy(FixedPolicy):
    """Records when evaluation tells it that new episodes start."""

    def __init__(self) -> None:
        super().__init__()
        self.resets: list[int] = []

    def reset_memory(self, batch: int) -> None:
        self.resets.append(batch)


def test_each_round_of_episodes_starts_with_an_empty_memory() -> None:
    evaluator = Evaluator(EnvConfig(id=CORRIDOR), episodes=40)
    policy = RememberingPolicy()
    try:
        evaluator.evaluate(policy, ("greedy", "sampled"))
    finally:
        evaluator.close()
    assert policy.resets == [32, 32, 32, 32]  # two rounds (32 + 8 episodes on 32 envs) in each mode
