"""model-judge: a preference-model reward from a run directory labels queries by its predicted returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Query
from polyfuse.registry import Kind, default_registry
from polyfuse.training.checkpoint import save_checkpoint
from polyfuse_feedback.judges.configs import ModelJudgeConfig
from polyfuse_feedback.judges.model_judge import ModelJudge

from judge_segments import JudgesPlugin, digits_segment

SPACE = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1), np.uint8), "question": spaces.Text(64)})


class Returns:
    """A stand-in reward model: a segment's predicted return is its shade / 100, the same for 2 members."""

    def predict_returns(self, segments: Any) -> np.ndarray:
        row = [float(s.observations["image"][0, 0, 0, 0]) / 100 for s in segments]
        return np.array([row, row])


def judge(**params: Any) -> ModelJudge:
    return ModelJudge(ModelJudgeConfig(reward_model="runs/x", **params), Returns(), SPACE, "runs/x")


def shade(value: int) -> Any:
    return digits_segment("what digit is this?", 3, 3, shade=value)


def test_prefers_the_higher_predicted_return() -> None:
    source = judge(scale=1.0, min_confidence=0.6)
    labels = source.label([Query(shade(0), shade(200)), Query(shade(250), shade(0)), Query(shade(100), shade(110))])
    assert labels[0].preference == 1.0 and labels[0].confidence == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert labels[1].preference == 0.0 and labels[1].confidence > 0.9
    assert labels[2] is None, "returns 1.0 and 1.1: confidence sigmoid(0.1) < 0.6, abstained"
    assert source.metrics() == {"answered": 2.0, "abstained": 1.0}


def test_ratings_by_thresholds() -> None:
    source = judge(rating_thresholds=[0.5, 1.5], scale=10)
    assert [label.rating for label in source.label([Query(shade(s), scale=3) for s in (0, 100, 250)])] == [1, 2, 3]
    assert source.label([Query(shade(49), scale=3)]) == [None], "0.49 is too close to the threshold 0.5"
    assert source.label([Query(shade(0), scale=5)]) == [None], "two thresholds make 3 levels, not 5"
    assert judge().label([Query(shade(0), scale=2)]) == [None], "no thresholds: ratings are abstained on"


def test_segments_of_another_environment_are_refused() -> None:
    source = judge()
    other = digits_segment("what digit is this?", 3, 3)
    other = type(other)(**{**other.__dict__, "observations": {"image": np.zeros((1, 7, 7, 3), np.uint8),
                                                              "question": ("q",)}})
    with pytest.raises(PolyfuseError, match=r"runs/x reads 'image' of shape \(8, 8, 1\), the segments have "
                                            r"\(7, 7, 3\)"):
        source.label([Query(other, other)])
    missing = type(other)(**{**other.__dict__, "observations": {"mission": ("go",)}})
    with pytest.raises(PolyfuseError, match=r"reads observations \['image', 'question'\], the segments to label "
                                            r"have \['mission'\]"):
        source.label([Query(missing, scale=2)])


def test_a_folder_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(PolyfuseError, match=f"{tmp_path} holds no saved reward model.*train-reward"):
        ModelJudge.from_saved(ModelJudgeConfig(reward_model=str(tmp_path)))


def test_a_run_without_a_reward_model(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"config": {"reward": {"name": "env", "params": {}}}, "reward": {}})
    with pytest.raises(PolyfuseError, match=f"the run in {tmp_path} trained with reward 'env', not a "
                                            "preference-model"):
        ModelJudge.from_saved(ModelJudgeConfig(reward_model=str(tmp_path)))


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="rating_thresholds must be increasing"):
        ModelJudgeConfig(reward_model="x", rating_thresholds=[1.0, 0.0])
    with pytest.raises(ValueError, match="min_confidence"):
        ModelJudgeConfig(reward_model="x", min_confidence=0.2)


def trained_run(registry: Any, output_dir: Path) -> None:
    """A tiny DigitsVQA RLHF run: DQN against a preference model labelled by the synthetic annotator."""
    from polyfuse.config import validate_pipeline
    from polyfuse.training.trainer import Trainer

    config = validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 16, "vectorization": "native"},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 32}},
        "reward": {"name": "preference-model", "params": {"max_labels": 300, "gradient_steps": 20,
                                                          "feedback": {"name": "synthetic"}}},
        "optimizer": {"name": "dqn", "params": {"learning_starts": 128, "batch_size": 32}},
        "trainer": {"total_steps": 1024, "eval_every": 1024, "eval_episodes": 8, "checkpoint_every": 1024,
                    "reward_update_every": 128, "output_dir": str(output_dir)},
    }, registry)
    Trainer(config, registry, progress=False).run()


def test_a_trained_run_judges_answers(make_registry: Any, tmp_path: Path) -> None:
    pytest.importorskip("polyfuse_dqn", reason="training the run to judge with needs an optimizer plugin (polyfuse-dqn)")
    if "sbert" not in default_registry().names("encoders"):
        pytest.skip("the run to judge with reads questions with polyfuse-sbert, not installed")
    from polyfuse.envs.digits_vqa import _dataset, draw_episodes

    trained_run(default_registry(), tmp_path)
    source = make_registry(JudgesPlugin, installed=False).create(Kind.FEEDBACK, "model-judge",
                                                                 {"reward_model": str(tmp_path), "min_confidence": 0.5})
    images, labels, split = _dataset()
    rng = np.random.default_rng(0)
    queries, truth = [], []
    for index, question, answer in zip(*draw_episodes(rng, split["test"], labels, 200)):
        right = digits_segment(question, answer, answer)
        right.observations["image"][0] = images[index]
        wrong = digits_segment(question, (answer + rng.integers(1, 12)) % 12, answer)
        wrong.observations["image"][0] = images[index]
        first_right = bool(rng.random() < 0.5)
        queries.append(Query(right, wrong) if first_right else Query(wrong, right))
        truth.append(0.0 if first_right else 1.0)
    answers = source.label(queries)
    agreement = np.mean([label.preference == expected for label, expected in zip(answers, truth)])
    assert agreement > 0.7, f"the run's reward model prefers the right answer in {agreement:.0%} of 200 pairs"
