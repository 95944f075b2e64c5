"""The ``model-judge``: a saved reward model labels the queries of a new run.

A saved reward model (:mod:`polyfuse_feedback.saved`: a ``train-reward``
folder or a preference-model run's checkpoint) holds the pipeline config it
was trained with and the ensemble's weights. The model is rebuilt from that
config through the registry (the same encoders and fuser) and compares
segments by its predicted returns (:meth:`PreferenceModel.predict_returns`). Use it to distil a slow
or costly judge's verdicts, to re-label with a model trained on people's
labels, or to measure how far a reward model alone can teach a policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label
from polyfuse.rewards import Segment

from polyfuse_feedback.judges.scoring import ScoringJudge

if TYPE_CHECKING:
    from polyfuse_feedback.judges.configs import ModelJudgeConfig

class ModelJudge(ScoringJudge):
    """Prefers the segment with the higher predicted return; confidence ``sigmoid(scale * |R2 - R1|)``."""

    def __init__(self, config: ModelJudgeConfig, model: Any, observation_space: Any, source: str) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.observation_space = observation_space
        self.source = source

    @classmethod
    def from_saved(cls, config: ModelJudgeConfig, registry: Any = None) -> ModelJudge:
        """Rebuild the saved reward model from its pipeline config and load its weights."""
        from polyfuse.config import validate_pipeline
        from polyfuse.envs import action_names, make_env
        from polyfuse.network import NetworkFactory
        from polyfuse.registry import default_registry
        from polyfuse.rewards import RunContext

        from polyfuse_feedback.model import PreferenceModel
        from polyfuse_feedback.plugin import PreferenceModelConfig
        from polyfuse_feedback.saved import load_members, read_saved_reward

        path = Path(config.reward_model).expanduser()
        saved = read_saved_reward(path)
        registry = registry or default_registry()
        pipeline = validate_pipeline(saved.pipeline, registry, source=f"the config saved in {path}")
        if pipeline.env is None:
            raise PolyfuseError(f"model-judge: the reward model in {path} names no env; its spaces are unknown")
        env = make_env(pipeline.env.id, pipeline.env.kwargs)
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
        # Only the weights are wanted: the model asks nobody, whatever feedback it was trained with.
        params = PreferenceModelConfig.model_validate({**pipeline.reward.params, "init_from": None, "max_labels": 0})
        names = action_names(pipeline.env.id, pipeline.env.kwargs) if params.head == "named" else None
        model = PreferenceModel(params, RunContext(observation_space, action_space,
                                                   NetworkFactory(pipeline, observation_space, registry), 0, path,
                                                   planned_updates=1, registry=registry, env_id=pipeline.env.id,
                                                   action_names=names), router=None)
        load_members(model, saved, str(path))
        return cls(config, model, observation_space, str(path))

    def check(self, segment: Segment) -> None:
        """Refuse segments the model was not trained on: other observation keys or shapes."""
        spaces = self.observation_space.spaces
        if set(segment.observations) != set(spaces):
            raise PolyfuseError(
                f"model-judge: the reward model in {self.source} reads observations {sorted(spaces)}, the segments "
                f"to label have {sorted(segment.observations)}; judge with a model trained on this environment")
        for key, space in spaces.items():
            shape = getattr(space, "shape", None)
            steps = segment.observations[key]
            if shape and isinstance(steps, np.ndarray) and tuple(steps.shape[1:]) != tuple(shape):
                raise PolyfuseError(
                    f"model-judge: the reward model in {self.source} reads {key!r} of shape {tuple(shape)}, the "
                    f"segments have {tuple(steps.shape[1:])}; judge with a model trained on this environment")

    def scores(self, segments: Sequence[Segment]) -> np.ndarray:
        for segment in segments[:2]:
            self.check(segment)
        return np.asarray(self.model.predict_returns(segments)).mean(0)

    def compare(self, first: float, second: float) -> Label | None:
        confidence = 1.0 / (1.0 + math.exp(-min(self.config.scale * abs(second - first), 60.0)))
        if confidence < self.config.min_confidence:
            return None
        return Label(1.0 if second > first else 0.0, confidence)

    def rate(self, predicted: float, scale: int) -> Label | None:
        thresholds = self.config.rating_thresholds
        if thresholds is None or len(thresholds) != scale - 1:
            return None
        nearest = min(abs(predicted - t) for t in thresholds)
        confidence = 1.0 / (1.0 + math.exp(-min(self.config.scale * nearest, 60.0)))
        if confidence < self.config.min_confidence:
            return None
        return Label(rating=1 + sum(predicted >= t for t in thresholds), confidence=confidence)
