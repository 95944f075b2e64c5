"""Neighbour consistency (``neighbour_consistency``): the k-NN graph, the swapped copies, the loss, off by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import Segment
from polyfuse_feedback.neighbours import NeighbourConsistency, NeighbourGraph, nearest_neighbours
from polyfuse_feedback.networks import Member
from polyfuse_feedback.plugin import NeighbourConsistencyConfig, PreferenceModelConfig
from pydantic import ValidationError
from test_preference_model import bandit_segments, make_model


def test_nearest_neighbours_on_a_line() -> None:
    points = np.array([[0.0], [1.0], [3.0], [10.0], [11.5]])
    assert nearest_neighbours(points, 1)[:, 0].tolist() == [1, 0, 1, 4, 3]
    assert nearest_neighbours(points, 2).tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert nearest_neighbours(points[:2], 3).tolist() == [[1], [0]]  # fewer rows than asked: all the others


def test_nearest_neighbours_in_chunks_match_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    points = np.random.default_rng(0).normal(size=(50, 6))
    whole = nearest_neighbours(points, 3)
    monkeypatch.setattr("polyfuse_feedback.neighbours.DISTANCE_CHUNK", 7)
    assert np.array_equal(nearest_neighbours(points, 3), whole)


def test_swapped_copies_change_only_the_modality_to_a_neighbours_value() -> None:
    images = np.array([[0, 0], [0, 1], [9, 9], [0, 0], [9, 8]], dtype=np.uint8)[:, :, None]  # step 3 repeats step 0
    observations = {"image": images, "text": ("a", "b", "c", "d", "e")}
    graph = NeighbourGraph(observations, "image", neighbours=1)
    drawn, swapped = graph.pairs(np.random.default_rng(0), 200)
    assert drawn["text"] == swapped["text"]
    pairs = {(tuple(a.ravel()), tuple(b.ravel())) for a, b in zip(drawn["image"], swapped["image"])}
    # never a step's own value (the repeated scan is one value), always its nearest other one
    assert pairs == {((0, 0), (0, 1)), ((0, 1), (0, 0)), ((9, 9), (9, 8)), ((9, 8), (9, 9))}


def test_one_distinct_value_gives_no_pairs() -> None:
    graph = NeighbourGraph({"image": np.zeros((4, 2, 2))}, "image", neighbours=3)
    assert graph.pairs(np.random.default_rng(0), 8) is None


def segments_with(vectors: np.ndarray) -> list[Segment]:
    return [Segment({"vector": v[None], "text": ("go",)}, np.array([0]), np.zeros(1, np.float32), [{}], True, False, 0)
            for v in vectors]


def test_the_loss_is_the_weighted_squared_gap_of_every_actions_reward() -> None:
    pool = segments_with(np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0]]))

    def rewards_of_vector(observations: dict[str, Any]) -> torch.Tensor:  # (K=2, N, 3 actions): reads the vector
        second = torch.as_tensor(observations["vector"][:, 1], dtype=torch.float32)
        return torch.stack([second[:, None].expand(-1, 3), 2 * second[:, None].expand(-1, 3)])

    term = NeighbourConsistency(NeighbourConsistencyConfig(modality="vector", neighbours=1, weight=0.5), seed=0)
    term.rebuild([], pool)
    # each value's neighbour differs by 1 in the second coordinate: gaps 1 and 2 for the two members
    assert term.loss(8, rewards_of_vector).item() == pytest.approx(0.5 * (1 + 4))
    assert term.metrics() == {"neighbour_gap": pytest.approx(2.5)} and term.metrics() == {}

    def rewards_of_text(observations: dict[str, Any]) -> torch.Tensor:
        return torch.ones(1, len(observations["text"]), 3)

    assert term.loss(8, rewards_of_text).item() == 0  # a reward that ignores the modality has no gap


@pytest.mark.parametrize(("modality", "message"), [("text", "is text"), ("image", "have no 'image'")])
def test_a_modality_that_cannot_give_neighbours_is_named(modality: str, message: str) -> None:
    term = NeighbourConsistency(NeighbourConsistencyConfig(modality=modality), seed=0)
    with pytest.raises(PolyfuseError, match=f"neighbour_consistency.modality: .*{message}"):
        term.rebuild(segments_with(np.eye(2)), [])


def test_multi_step_segments_are_drawn_from_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("polyfuse_feedback.neighbours.MAX_GRAPH_STEPS", 5)
    episodes = [Segment({"vector": np.arange(3 * i, 3 * i + 3, dtype=np.float32)[:, None], "text": ("a", "b", "c")},
                        np.zeros(3, np.int64), np.zeros(3, np.float32), [{}] * 3, True, False, 0) for i in range(4)]
    term = NeighbourConsistency(NeighbourConsistencyConfig(modality="vector", neighbours=1), seed=0)
    term.rebuild([], episodes)
    assert term.graph is not None and term.graph.steps == 5  # 5 of the 12 steps, each with its own text
    steps = term.graph.observations
    assert len(set(steps["vector"].ravel().tolist())) == 5
    assert all("abc"[int(v) % 3] == t for v, t in zip(steps["vector"].ravel(), steps["text"]))


def test_labelled_steps_are_always_in_the_graph_and_the_pool_fills_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("polyfuse_feedback.neighbours.MAX_GRAPH_STEPS", 6)
    labelled = segments_with(np.array([[100.0, 0.0], [100.0, 1.0]]))
    pool = segments_with(np.arange(20, dtype=np.float64)[:, None].repeat(2, 1))
    term = NeighbourConsistency(NeighbourConsistencyConfig(modality="vector", neighbours=1), seed=0)
    term.rebuild(labelled, pool)
    assert term.graph is not None and term.graph.steps == 6
    vectors = term.graph.observations["vector"]
    assert vectors[:2].tolist() == [[100.0, 0.0], [100.0, 1.0]], "both labelled steps, though the pool alone fills it"
    assert set(vectors[2:, 0].tolist()) <= set(range(20)) and len(set(vectors[2:, 0].tolist())) == 4
    # with the pool past its last labelled step, a labelled scan still has its labelled neighbour
    drawn, swapped = term.graph.pairs(np.random.default_rng(0), 50)
    for before, after in zip(drawn["vector"], swapped["vector"]):
        if before[0] == 100.0:
            assert after[0] == 100.0 and after[1] != before[1]
    term.rebuild([], [])
    assert term.graph is None


def test_the_modality_is_checked_when_the_model_is_built(helpers: Any, tmp_path: Path) -> None:
    with pytest.raises(PolyfuseError, match="neighbour_consistency.modality: 'text' is text"):
        make_model(helpers, tmp_path, neighbour_consistency={"modality": "text"})
    with pytest.raises(PolyfuseError, match=r"have no 'image'; choose one of \['text', 'vector'\]"):
        make_model(helpers, tmp_path, neighbour_consistency={"modality": "image"})


@pytest.mark.parametrize("head", ["per-action", "concat"])
def test_every_actions_reward_matches_the_taken_actions(head: str, helpers: Any) -> None:
    env = helpers.WordBandit(num_words=3)
    member = Member(helpers.make_network(env.observation_space), 3, [16], head)
    segments = bandit_segments(env, np.random.default_rng(0), 5)
    observations = {"vector": np.concatenate([s.observations["vector"] for s in segments]),
                    "text": tuple(s.observations["text"][0] for s in segments)}
    every = member.action_rewards(observations)
    assert every.shape == (5, 3)
    for action in range(3):
        taken = member(observations, torch.full((5,), action))
        assert torch.allclose(every[:, action], taken, atol=1e-6)


def neighbour_gap(model: Any, segments: list[Segment]) -> float:
    """Mean squared gap of the ensemble's per-action rewards between each segment and its nearest other one."""
    vectors = np.concatenate([s.observations["vector"] for s in segments])
    nearest = nearest_neighbours(vectors, 1)[:, 0]
    observations = {"vector": vectors, "text": tuple(s.observations["text"][0] for s in segments)}
    swapped = {**observations, "vector": vectors[nearest]}
    with torch.no_grad():
        return float((model._action_rewards(observations)
                      - model._action_rewards(swapped)).pow(2).mean())


def test_the_term_pulls_neighbours_rewards_together_in_a_run(helpers: Any, tmp_path: Path) -> None:
    assert PreferenceModelConfig().neighbour_consistency is None
    settings = {"max_labels": 60, "updates": 3, "gradient_steps": 40}
    off, env = make_model(helpers, tmp_path / "off", **settings)
    on, _ = make_model(helpers, tmp_path / "on", **settings,
                       neighbour_consistency={"modality": "vector", "neighbours": 1, "weight": 20.0, "ratio": 2})
    segments = bandit_segments(env, np.random.default_rng(0), 300)  # the vector is noise: its neighbours mean nothing
    metrics = {}
    for name, model in (("off", off), ("on", on)):
        model.observe(segments)
        for _ in range(3):
            metrics[name] = model.update()
    assert "neighbour_gap" not in metrics["off"] and metrics["on"]["neighbour_gap"] >= 0
    assert neighbour_gap(on, segments) < 0.5 * neighbour_gap(off, segments)
    restored, _ = make_model(helpers, tmp_path / "on", **settings, neighbour_consistency={"modality": "vector"})
    restored.load_state_dict(on.state_dict())
    assert restored.neighbours.rng.bit_generator.state == on.neighbours.rng.bit_generator.state


@pytest.mark.parametrize(("params", "message"), [
    ({}, "neighbour_consistency.modality"),
    ({"modality": "image", "neighbours": 0}, "neighbour_consistency.neighbours"),
    ({"modality": "image", "weight": 0}, "neighbour_consistency.weight"),
    ({"modality": "image", "k": 3}, "neighbour_consistency.k"),
])
def test_config_errors_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        PreferenceModelConfig(neighbour_consistency=params)
    located = [".".join(str(p) for p in e["loc"]) for e in error.value.errors()]
    assert message in located, located
