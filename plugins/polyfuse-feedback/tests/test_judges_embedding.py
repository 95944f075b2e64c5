"""embedding-judge: similarity of a segment's candidate text to its reference, with the bundled MiniLM."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label, Query
from polyfuse.registry import Kind, default_registry
from polyfuse.rewards import Segment
from polyfuse_feedback.judges.configs import EmbeddingJudgeConfig
from polyfuse_feedback.judges.fields import ActionNames, Template, env_action_names, segment_fields

from judge_segments import ANSWERS, JudgesPlugin, digits_segment

needs_sbert = pytest.mark.skipif("sbert" not in default_registry().names("encoders"),
                                 reason="embedding-judge embeds text with polyfuse-sbert, not installed")
DIGITS = {"candidate": "{action}", "reference": "{expert_action!n}", "action_names": ANSWERS}
RIGHT = digits_segment("what digit is this?", 3, 3)
WRONG = digits_segment("what digit is this?", 5, 3)
YES = digits_segment("is it even?", 10, 10)
NO = digits_segment("is it even?", 11, 10)


@pytest.fixture(scope="module")
def judge() -> Any:
    if "sbert" not in default_registry().names("encoders"):
        pytest.skip("embedding-judge embeds text with polyfuse-sbert, not installed")
    from polyfuse_feedback.judges.embedding_judge import EmbeddingJudge, load_sbert

    return lambda **params: EmbeddingJudge(EmbeddingJudgeConfig(**{**DIGITS, **params}), load_sbert({}))


def test_fields_of_a_segment() -> None:
    fields = segment_fields(NO, ActionNames(ANSWERS))
    assert fields == {"question": "is it even?", "success": False, "expert_action": 10, "action": "no",
                      "actions": "no", "steps": 1}
    assert Template("{question} {expert_action!n}", ActionNames(ANSWERS), "reference").render(NO) == "is it even? yes"
    assert Template("{action}", ActionNames(None), "candidate").render(NO) == "11", "unnamed actions are numbers"


def test_a_missing_field_names_the_ones_there_are() -> None:
    with pytest.raises(PolyfuseError, match=r"params.reference: .*'mission'.*its fields are action, actions, "
                                            r"expert_action, question, steps, success"):
        Template("{mission}", ActionNames(ANSWERS), "reference").render(NO)


def test_action_names_from_the_environment() -> None:
    assert env_action_names("polyfuse/DigitsVQA-v0") == ANSWERS
    pytest.importorskip("minigrid", reason="BabyAI needs the optional minigrid package")
    assert env_action_names("BabyAI-GoToRedBallNoDists-v0") == ["left", "right", "forward", "pickup", "drop",
                                                                   "toggle", "done"]


def test_prefers_the_answer_closer_to_the_reference(judge: Any) -> None:
    source = judge()
    labels = source.label([Query(RIGHT, WRONG), Query(NO, YES), Query(RIGHT, YES)])
    assert [label.preference for label in labels[:2]] == [0.0, 1.0]
    assert all(label.confidence > 0.9 for label in labels[:2])
    assert labels[2] is None, "both answers are right: no margin, abstained"
    assert source.metrics() == {"answered": 2.0, "abstained": 1.0}


def test_ratings_map_similarity_onto_the_scale(judge: Any) -> None:
    source = judge(similarity_range=(0.6, 1.0))
    right, wrong = source.label([Query(RIGHT, scale=5), Query(NO, scale=2)])
    assert right == Label(rating=5, confidence=1.0)
    assert wrong.rating == 1, f"'no' against 'yes' is about 0.73 similar: below the middle of [0.6, 1] ({wrong})"
    edge = judge(similarity_range=(0.0, 2.0), min_margin=0.05).label([Query(RIGHT, scale=2)])
    assert edge == [None], "similarity 1.0 is the boundary between levels 1 and 2 of [0, 2]: abstained"


def test_mission_against_what_the_agent_faces(judge: Any) -> None:
    """A BabyAI-style use: the outcome's description ({facing}) against the mission."""
    def reached(facing: str) -> Segment:
        return Segment({"mission": ("go to the red ball",) * 2}, np.array([2, 2]), np.zeros(2, np.float32),
                       ({"facing": "nothing"}, {"facing": facing}), True, False, 0)

    source = judge(candidate="go to the {facing}", reference="{mission}")
    assert [label.preference for label in source.label([Query(reached("grey wall"), reached("red ball")),
                                                        Query(reached("red ball"), reached("blue key"))])] == [1.0, 0.0]


def test_facing_info_on_babyai() -> None:
    pytest.importorskip("minigrid", reason="BabyAI needs the optional minigrid package")
    from polyfuse.envs import make_env

    env = make_env("BabyAI-GoToRedBallNoDists-v0")
    _, info = env.reset(seed=0)
    facings = {info["facing"]}
    for action in [0, 2, 2, 2, 1, 2, 2]:
        facings.add(env.step(action)[4]["facing"])
    assert "nothing" in facings and all(f == "nothing" or len(f.split()) == 2 for f in facings), facings


def test_without_sbert_the_error_says_what_to_install(make_registry: Any) -> None:
    from polyfuse_feedback.judges.embedding_judge import load_sbert

    with pytest.raises(PolyfuseError, match="pip install polyfuse-sbert"):
        load_sbert({}, registry=make_registry(installed=False))


@needs_sbert
def test_through_the_registry(make_registry: Any) -> None:
    registry = make_registry(JudgesPlugin, installed=False)
    source = registry.create(Kind.FEEDBACK, "embedding-judge", {**DIGITS, "action_names": None,
                                                                 "env": "polyfuse/DigitsVQA-v0"})
    assert source.label([Query(WRONG, RIGHT)])[0].preference == 1.0


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="similarity_range must be increasing"):
        EmbeddingJudgeConfig(**DIGITS, similarity_range=(1, 0))
    with pytest.raises(ValueError, match="candidate"):
        EmbeddingJudgeConfig(reference="{question}")


def test_segments_carry_their_own_last_info() -> None:
    """Under DigitsVQA's same-step autoreset the top-level info is the next episode's: a judge reads final_info."""
    from polyfuse.envs import make_vector_env
    from polyfuse.training.vector_env import TrackedVectorEnv

    envs = TrackedVectorEnv(make_vector_env("polyfuse/DigitsVQA-v0", {}, num_envs=8, vectorization="native", seed=0), 0)
    envs.reset(seed=0)
    envs.step(np.zeros(8, dtype=np.int64))
    for segment in envs.pop_segments():
        info = segment.infos[-1]
        assert bool(info["success"]) == (segment.env_rewards[-1] == 1.0) == (info["expert_action"] == 0)


def test_registering_imports_no_torch() -> None:
    import subprocess

    code = "import sys, polyfuse_feedback.judges; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
