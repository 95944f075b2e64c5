"""The ``model-judge``: a reward model trained in an earlier polyfuse run labels the queries of a new one.

The run directory's latest checkpoint holds the pipeline config the model
was trained with and, in its reward part, the ensemble's weights
(``state["members"]``). The model is rebuilt from that config through the
registry (the same encoders and fuser) and compares segments by its predicted
returns (:meth:`PreferenceModel.predict_returns`). Use it to distil a slow
or costly judge's verdicts, to re-label with a model trained on people's
labels, or to measure how far a reward model alone can teach a policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import FeedbackSource, Label, Query
from polyfuse.rewards import Segment

if TYPE_CHECKING:
    from polyfuse_feedback.judges.configs import ModelJudgeConfig

REWARD = "preference-model"


def read_run(run_dir: Path) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The run's saved pipeline config and its reward model's ``members`` state, from the latest intact checkpoint."""
    from polyfuse.training.checkpoint import (
        checkpoint_location,
        lazy_tensors,
        read_checkpoint_tree,
        unflatten_state,
    )

    location = checkpoint_location(run_dir) if run_dir.is_dir() else None
    if location is None:
        raise PolyfuseError(f"model-judge: {run_dir} holds no polyfuse checkpoint; params.run_dir must be the "
                            f"output_dir of a finished (or checkpointed) run with reward: {REWARD}")
    tree = read_checkpoint_tree(location)
    config = tree.get("config") or {}
    reward = (config.get("reward") or {}).get("name")
    if reward != REWARD:
        raise PolyfuseError(f"model-judge: the run in {run_dir} was trained with reward {reward!r}, not {REWARD!r}, "
                            f"so it has no reward model to judge with; train one with reward: {{name: {REWARD}}} "
                            "(examples/digits_vqa_rlhf.yaml) and name its output_dir")
    members = (tree.get("reward") or {}).get("members")
    if not isinstance(members, Mapping):
        raise PolyfuseError(f"model-judge: the checkpoint {location} has no reward model weights (reward.members); "
                            "was it written by this version of polyfuse-feedback?")
    with lazy_tensors(location) as tensors:
        state = unflatten_state(members, tensors)
    return config, state


class ModelJudge(FeedbackSource):
    """Prefers the segment with the higher predicted return; confidence ``sigmoid(scale * |R2 - R1|)``."""

    def __init__(self, config: ModelJudgeConfig, model: Any, observation_space: Any, source: str) -> None:
        self.config = config
        self.model = model
        self.observation_space = observation_space
        self.source = source
        self.counts = {"answered": 0, "abstained": 0}

    @classmethod
    def from_run(cls, config: ModelJudgeConfig, registry: Any = None) -> ModelJudge:
        """Rebuild the run's reward model and load its weights."""
        from polyfuse.config import validate_pipeline
        from polyfuse.envs import make_env
        from polyfuse.network import NetworkFactory
        from polyfuse.registry import default_registry
        from polyfuse.rewards import RunContext

        run_dir = Path(config.run_dir).expanduser()
        saved, members = read_run(run_dir)
        registry = registry or default_registry()
        pipeline = validate_pipeline(saved, registry, source=f"the config saved in {run_dir}")
        if pipeline.env is None:
            raise PolyfuseError(f"model-judge: the run in {run_dir} has no env; its reward model's spaces are unknown")
        env = make_env(pipeline.env.id, pipeline.env.kwargs)
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
        # Only the weights are wanted: the model asks nobody (no labels), whatever feedback the run had.
        params = {key: value for key, value in pipeline.reward.params.items() if key != "init_from"}
        params.update(max_labels=0, feedback={"name": "synthetic"})
        model = registry.create("rewards", REWARD, params, context=RunContext(
            observation_space, action_space, NetworkFactory(pipeline, observation_space, registry), 0, run_dir,
            planned_updates=1))
        try:
            model.members.load_state_dict(members)
        except (RuntimeError, KeyError) as exc:
            raise PolyfuseError(f"model-judge: the reward model saved in {run_dir} does not fit the one its config "
                                f"builds ({str(exc)[:300]}); was it trained with another version of polyfuse-feedback?"
                                ) from None
        return cls(config, model, observation_space, str(run_dir))

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

    def label(self, queries: Sequence[Query]) -> list[Label | None]:
        segments = [s for q in queries for s in (q.first, q.second) if s is not None]
        for segment in segments[:2]:
            self.check(segment)
        returns = iter(np.asarray(self.model.predict_returns(segments)).mean(0).tolist() if segments else [])
        labels = []
        for query in queries:
            first = next(returns)
            label = self._compare(first, next(returns)) if query.is_comparison else self._rate(first, query.scale)
            self.counts["answered" if label is not None else "abstained"] += 1
            labels.append(label)
        return labels

    def _compare(self, first: float, second: float) -> Label | None:
        confidence = 1.0 / (1.0 + math.exp(-min(self.config.scale * abs(second - first), 60.0)))
        if confidence < self.config.min_confidence:
            return None
        return Label(1.0 if second > first else 0.0, confidence)

    def _rate(self, predicted: float, scale: int) -> Label | None:
        thresholds = self.config.rating_thresholds
        if thresholds is None or len(thresholds) != scale - 1:
            return None
        nearest = min(abs(predicted - t) for t in thresholds)
        confidence = 1.0 / (1.0 + math.exp(-min(self.config.scale * nearest, 60.0)))
        if confidence < self.config.min_confidence:
            return None
        return Label(rating=1 + sum(predicted >= t for t in thresholds), confidence=confidence)

    def metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.counts)

    def load_state_dict(self, state: Any) -> None:
        self.counts = {key: int(state.get(key, 0)) for key in self.counts}
