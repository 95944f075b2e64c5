"""Small multimodal tasks for testing RL optimizers: a text bandit, a text chain, a cue to recall (for
policies with memory), networks that read them, and a scripted reward source.

An optimizer plugin's ``conftest.py`` imports the fixtures::

    from polyfuse.rl.testing import helpers, make_pipeline  # noqa: F401 (pytest fixtures)

The tasks name the rewarded action in the text only (the vector is noise or
the position; recall names it in the first step's text alone), learn within
seconds on a CPU, and come as same-step-autoreset vector envs that can be snapshotted (:class:`polyfuse.testing.SnapshotVectorEnv`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from polyfuse.encoding import Encoder
from polyfuse.network import MultimodalNetwork
from polyfuse.registry import default_registry
from polyfuse.rewards import RewardBatch, RewardSource
from polyfuse.testing import SnapshotVectorEnv, snapshot_vector_env
from polyfuse.testing import pipeline_for as pipeline_over
from polyfuse.training import Pipeline

TEXT = gym.spaces.Text(max_length=32, charset="abcdefghijklmnopqrstuvwxyz ")


class WordBandit(gym.Env):
    """One-step episodes: the text names the paying action ("go left" -> 0, "go right" -> 1, …); the vector is noise."""

    WORDS = ("left", "right", "up", "down")

    def __init__(self, num_words: int = 2, action_start: int = 0) -> None:
        self.words = self.WORDS[:num_words]
        self.observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-1.0, 1.0, (4,), np.float32), "text": TEXT})
        self.action_space = gym.spaces.Discrete(num_words, start=action_start)
        self._target = 0

    def _observation(self) -> dict[str, Any]:
        return {"vector": self.np_random.uniform(-1, 1, 4).astype(np.float32), "text": f"go {self.words[self._target]}"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._target = int(self.np_random.integers(len(self.words)))
        return self._observation(), {}

    def step(self, action):
        success = int(action) - int(self.action_space.start) == self._target
        return self._observation(), float(success), True, False, {"success": success}


class WordChain(gym.Env):
    """Press the named button ``length`` times to reach the goal (reward 1, terminated); ``max_steps`` truncates.

    The vector is the one-hot position; the button changes after every
    correct press, so the text must be read at each step. MultiDiscrete
    actions (``multi=True``): the first dimension is the button (values from
    1), the second is ignored.
    """

    BUTTONS = ("red", "green", "blue")

    def __init__(self, length: int = 3, max_steps: int = 6, multi: bool = False) -> None:
        self.length, self.max_steps, self.multi = length, max_steps, multi
        self.observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(0.0, 1.0, (length + 1,), np.float32), "text": TEXT}
        )
        self.action_space = gym.spaces.MultiDiscrete([3, 2], start=[1, 0]) if multi else gym.spaces.Discrete(3)
        self._button = self._position = self._steps = 0

    def _observation(self) -> dict[str, Any]:
        vector = np.zeros(self.length + 1, dtype=np.float32)
        vector[self._position] = 1.0
        return {"vector": vector, "text": f"press {self.BUTTONS[self._button]}"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._button = int(self.np_random.integers(3))
        self._position = self._steps = 0
        return self._observation(), {}

    def step(self, action):
        self._steps += 1
        button = int(np.asarray(action).reshape(-1)[0]) - (1 if self.multi else 0)
        if button == self._button:
            self._position += 1
            self._button = int(self.np_random.integers(3))
        terminated = self._position == self.length
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), float(terminated), terminated, truncated, {"success": terminated}


class WordRecall(gym.Env):
    """A cue, a wait, a choice: only a policy with memory beats chance.

    The first text names the paying action ("go left" -> 0, "go right" -> 1),
    the next ``delay`` steps say nothing ("wait"), the last says "go": the
    action taken then pays 1 if it is the cue's (terminated). Actions before
    it are ignored. The vector is the one-hot step, so the last step is
    known; the cue is not, unless remembered. ``info["expert_action"]`` is
    the cue's action at every step (what behaviour cloning follows).
    """

    def __init__(self, delay: int = 2) -> None:
        self.delay = delay
        self.observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(0.0, 1.0, (delay + 2,), np.float32), "text": TEXT}
        )
        self.action_space = gym.spaces.Discrete(2)
        self._target = self._step = 0

    def _observation(self) -> dict[str, Any]:
        vector = np.zeros(self.delay + 2, dtype=np.float32)
        vector[self._step] = 1.0
        text = f"go {WordBandit.WORDS[self._target]}" if self._step == 0 else \
            "go" if self._step == self.delay + 1 else "wait"
        return {"vector": vector, "text": text}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._target, self._step = int(self.np_random.integers(2)), 0
        return self._observation(), {"expert_action": self._target}

    def step(self, action):
        if self._step <= self.delay:
            self._step += 1
            return self._observation(), 0.0, False, False, {"expert_action": self._target}
        success = int(action) == self._target
        return self._observation(), float(success), True, False, {"success": success, "expert_action": self._target}


ENVS = {"bandit": WordBandit, "chain": WordChain, "recall": WordRecall}

RECALL_ID = "polyfuse-test/WordRecall-v0"
"""WordRecall for a run's config: ``env.id: "polyfuse.rl.testing:polyfuse-test/WordRecall-v0"`` registers it."""
if RECALL_ID not in gym.registry:
    gym.register(RECALL_ID, entry_point=WordRecall)


class ScriptedReward(RewardSource):
    """A reward source whose ``score`` is ``rule(batch)``, changeable mid-run; keeps every batch it scored.

    Not stationary unless told: optimizers must then score what they consume
    when they consume it, which tests check by changing ``rule``.
    """

    def __init__(self, rule: Callable[[RewardBatch], Any], stationary: bool = False) -> None:
        self.rule = rule
        self.stationary = stationary
        self.batches: list[RewardBatch] = []

    def score(self, batch: RewardBatch) -> np.ndarray:
        self.batches.append(batch)
        return np.asarray(self.rule(batch), dtype=np.float32)
VOCABULARY = ("go", *WordBandit.WORDS, "press", *WordChain.BUTTONS)


class WordsEncoder(Encoder):
    """Known words as a multi-hot vector (unknown words are ignored), then a linear layer (trainable or frozen)."""

    def __init__(self, output_dim: int = 16, trainable: bool = True) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.index = {word: i for i, word in enumerate(VOCABULARY)}
        self.layer = nn.Linear(len(VOCABULARY), output_dim)
        self.layer.requires_grad_(trainable)

    def forward(self, batch: Any) -> torch.Tensor:
        hot = np.zeros((len(batch), len(self.index)), dtype=np.float32)
        for row, text in enumerate(batch):
            for word in str(text).split():
                if word in self.index:
                    hot[row, self.index[word]] = 1.0
        return torch.relu(self.layer(torch.from_numpy(hot)))


class VectorEncoder(Encoder):
    """A trainable linear layer over a float vector."""

    def __init__(self, input_dim: int, output_dim: int = 16) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.layer = nn.Linear(input_dim, output_dim)

    def forward(self, batch: Any) -> torch.Tensor:
        return torch.relu(self.layer(torch.as_tensor(np.asarray(batch), dtype=torch.float32)))


def make_network(observation_space: gym.spaces.Dict, frozen_text: bool = False) -> MultimodalNetwork:
    encoders = {
        "vector": VectorEncoder(observation_space["vector"].shape[0]),
        "text": WordsEncoder(trainable=not frozen_text),
    }
    fuser = default_registry().create(
        "fusers", "concat", {}, input_dims={name: encoder.output_dim for name, encoder in encoders.items()}
    )
    return MultimodalNetwork(encoders, {"vector": "vector", "text": "text"}, fuser)


def assert_checkpointable(state: Any) -> None:
    """Every leaf of an optimizer's ``state_dict()`` is something a checkpoint stores without pickle."""
    if isinstance(state, dict):
        for value in state.values():
            assert_checkpointable(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            assert_checkpointable(value)
    else:
        assert state is None or isinstance(state, (torch.Tensor, np.ndarray, bool, int, float, str)), type(state)


def make_vector_env(env: str = "bandit", num_envs: int = 4, seed: int = 0, **kwargs: Any) -> SnapshotVectorEnv:
    """``num_envs`` copies of ``ENVS[env](**kwargs)``, seeded once with ``seed``."""
    factory = ENVS[env]
    return snapshot_vector_env(lambda: factory(**kwargs), num_envs, seed)


def pipeline_for(envs: Any, seed: int = 0, frozen_text: bool = False, reward: RewardSource | None = None) -> Pipeline:
    """A pipeline over ``envs`` with :func:`make_network`'s networks (the environment's reward unless ``reward``)."""
    return pipeline_over(envs, lambda: make_network(envs.single_observation_space, frozen_text), seed, reward)


@pytest.fixture
def make_pipeline() -> Iterator[Callable[..., Pipeline]]:
    """``make_pipeline(env="bandit"|"chain"|"recall", num_envs=4, seed=0, frozen_text=False, reward=None, **env_kwargs)``."""
    made: list[Pipeline] = []

    def make(
        env: str = "bandit", num_envs: int = 4, seed: int = 0, frozen_text: bool = False,
        reward: RewardSource | None = None, **kwargs: Any,
    ) -> Pipeline:
        pipeline = pipeline_for(make_vector_env(env, num_envs, seed, **kwargs), seed, frozen_text, reward)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        assert pipeline.envs is not None
        pipeline.envs.close()


@pytest.fixture
def helpers() -> Any:
    """This module, for tests that need more than a pipeline (envs to evaluate on, networks)."""
    return sys.modules[__name__]
