"""Small Dict-observation environments (a number vector and text), simple encoders and a pipeline builder."""

from __future__ import annotations

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
from polyfuse import testing
from polyfuse.testing import SnapshotVectorEnv, snapshot_vector_env
from polyfuse.training import Pipeline

torch.set_num_threads(1)

TEXT = gym.spaces.Text(max_length=32, charset="abcdefghijklmnopqrstuvwxyz ")


class WordBandit(gym.Env):
    """One-step episodes: the text says which action pays ("go left" -> 0, "go right" -> 1); the vector is noise."""

    WORDS = ("left", "right")

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-1.0, 1.0, (4,), np.float32), "text": TEXT})
        self.action_space = gym.spaces.Discrete(len(self.WORDS))
        self._target = 0

    def _observation(self) -> dict[str, Any]:
        return {"vector": self.np_random.uniform(-1, 1, 4).astype(np.float32), "text": f"go {self.WORDS[self._target]}"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._target = int(self.np_random.integers(len(self.WORDS)))
        return self._observation(), {}

    def step(self, action):
        success = int(action) == self._target
        return self._observation(), float(success), True, False, {"success": success}


class WordChain(gym.Env):
    """Press the named button ``length`` times to reach the goal (reward 1, terminated); ``max_steps`` truncates.

    The vector is the one-hot position; the button changes after every
    correct press, so the text must be read at each step. MultiDiscrete
    actions (``multi=True``): the first dimension is the button, the second is
    ignored.
    """

    BUTTONS = ("red", "green", "blue")

    def __init__(self, length: int = 3, max_steps: int = 6, multi: bool = False) -> None:
        self.length, self.max_steps, self.multi = length, max_steps, multi
        self.observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(0.0, 1.0, (length + 1,), np.float32), "text": TEXT}
        )
        self.action_space = (
            gym.spaces.MultiDiscrete([3, 2], start=[1, 0]) if multi else gym.spaces.Discrete(3)
        )
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


ENVS = {"bandit": WordBandit, "chain": WordChain}
VOCABULARY = ("go", *WordBandit.WORDS, "press", *WordChain.BUTTONS)


class WordsEncoder(Encoder):
    """Known words as a multi-hot vector (unknown words are ignored), then a trainable linear layer."""

    def __init__(self, output_dim: int = 16, trainable: bool = True) -> None:
        super().__init__()
        self.index = {word: i for i, word in enumerate(VOCABULARY)}
        self.output_dim = output_dim
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


def make_vector_env(env: str = "bandit", num_envs: int = 4, seed: int = 0, **kwargs: Any) -> SnapshotVectorEnv:
    factory = ENVS[env]
    return snapshot_vector_env(lambda: factory(**kwargs), num_envs, seed)


def pipeline_for(envs: Any, seed: int = 0, frozen_text: bool = False) -> Pipeline:
    return testing.pipeline_for(envs, lambda: make_network(envs.single_observation_space, frozen_text), seed)


@pytest.fixture
def make_pipeline() -> Iterator[Callable[..., Pipeline]]:
    """``make_pipeline(env="bandit"|"chain", num_envs=4, seed=0, frozen_text=False, **env_kwargs)``."""
    made: list[Pipeline] = []

    def make(
        env: str = "bandit", num_envs: int = 4, seed: int = 0, frozen_text: bool = False, **kwargs: Any
    ) -> Pipeline:
        pipeline = pipeline_for(make_vector_env(env, num_envs, seed, **kwargs), seed, frozen_text)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.envs.close()


@pytest.fixture
def helpers() -> Any:
    """The module-level helpers above, for tests that need more than a pipeline."""

    class Helpers:
        WordBandit = WordBandit
        WordChain = WordChain
        make_vector_env = staticmethod(make_vector_env)
        pipeline_for = staticmethod(pipeline_for)
        make_network = staticmethod(make_network)

    return Helpers
