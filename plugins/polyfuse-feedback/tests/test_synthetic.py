"""The synthetic annotator: rational at temperature 0, Boltzmann-noisy above it, mistaken at its error rate."""

from __future__ import annotations

import numpy as np
import pytest
from polyfuse.feedback import Label, Query
from polyfuse.rewards import Segment
from polyfuse_feedback.plugin import SyntheticConfig
from polyfuse_feedback.synthetic import SyntheticAnnotator, preference_probability


def segment(*rewards: float) -> Segment:
    steps = len(rewards)
    return Segment({"x": np.zeros((steps, 1))}, np.zeros(steps, np.int64), np.array(rewards, np.float32),
                   [{}] * steps, True, False, 0)


def annotator(seed: int = 0, **params) -> SyntheticAnnotator:
    return SyntheticAnnotator(SyntheticConfig(**params), seed)


def test_a_rational_annotator_prefers_the_higher_return_and_ties_equal_ones() -> None:
    labels = annotator().label([Query(segment(1, 0), segment(0, 0)), Query(segment(0), segment(0.5)),
                                Query(segment(1, 1), segment(2))])
    assert labels == [Label(0.0, 1.0), Label(1.0, 1.0), Label(0.5, 1.0)]


def test_tie_margin() -> None:
    assert annotator(tie_margin=0.2).label([Query(segment(1.0), segment(1.1))]) == [Label(0.5, 1.0)]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_boltzmann_choice_frequency_matches_the_temperature(temperature: float) -> None:
    labels = annotator(temperature=temperature).label([Query(segment(0.0), segment(1.0))] * 4000)
    share = np.mean([label.preference for label in labels])
    expected = 1 / (1 + np.exp(-1 / temperature))
    assert expected == pytest.approx(preference_probability(0.0, 1.0, temperature))
    assert abs(share - expected) < 0.03
    assert labels[0].confidence == pytest.approx(expected)


def test_error_rate_flips_that_share_of_strict_preferences() -> None:
    labels = annotator(error_rate=0.2).label([Query(segment(0.0), segment(1.0))] * 4000)
    assert abs(np.mean([label.preference == 0.0 for label in labels]) - 0.2) < 0.03
    ties = annotator(error_rate=0.5).label([Query(segment(1.0), segment(1.0))] * 100)
    assert all(label.preference == 0.5 for label in ties), "ties are never flipped"


def test_seeded_and_state_round_trip() -> None:
    queries = [Query(segment(0.0), segment(0.3))] * 50
    first, second = annotator(seed=7, temperature=1.0), annotator(seed=7, temperature=1.0)
    assert first.label(queries) == second.label(queries)
    state = first.state_dict()
    expected = first.label(queries)
    restored = annotator(seed=99, temperature=1.0)
    restored.load_state_dict(state)
    assert restored.label(queries) == expected and restored.answered == first.answered


def test_unknown_rewards_are_abstained_on_not_guessed() -> None:
    unknown = segment(1.0, float("nan"))
    labels = annotator().label([Query(unknown, scale=2), Query(segment(1.0), unknown), Query(segment(1.0), scale=2)])
    assert labels == [None, None, Label(rating=2)]
