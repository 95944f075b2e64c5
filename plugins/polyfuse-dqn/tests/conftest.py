"""Small Dict-observation environments (a number vector and text), simple encoders and a pipeline builder."""

from __future__ import annotations

from collections.abc import Callable
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

TEXT_SPACE = gym.spaces.Text(max_length=40, charset="abcdefghijklmnopqrstuvwxyz ")


class TextBandit(gym.Env):
    """One-step episodes: the text names the rewarded action ("please go left"); the vector is noise."""

    WORDS = ("left", "right", "up", "down")

    def __init__(self, action_start: int = 0) -> None:
        self.observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(-1.0, 1.0, (3,), np.float32), "text": TEXT_SPACE}
        )
        self.action_space = gym.spaces.Discrete(len(self.WORDS), start=action_start)
        self._target = 0

    def _observation(self) -> dict[str, Any]:
        vector = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return {"vector": vector, "text": f"please go {self.WORDS[self._target]}"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._target = int(self.np_random.integers(len(self.WORDS)))
        return self._observation(), {}

    def step(self, action):
        success = int(action) - int(self.action_space.start) == self._target
        return self._observation(), float(success), True, False, {"success": success}


class TextCorridor(gym.Env):
    """Walk ``length`` cells by pressing the button the text names; reward 1 at the end (terminated).

    A wrong button leaves the agent in place; ``max_steps`` truncates the
    episode. The vector is the one-hot position.
    """

    BUTTONS = ("red", "green", "blue")

    def __init__(self, length: int = 3, max_steps: int = 5) -> None:
        self.length, self.max_steps = length, max_steps
        self.observation_space = gym.spaces.Dict(
            {"vector": gym.spaces.Box(0.0, 1.0, (length + 1,), np.float32), "text": TEXT_SPACE}
        )
        self.action_space = gym.spaces.Discrete(len(self.BUTTONS))
        self._button = self._position = self._steps = 0

    def _observation(self) -> dict[str, Any]:
        vector = np.zeros(self.length + 1, dtype=np.float32)
        vector[self._position] = 1.0
        return {"vector": vector, "text": f"press the {self.BUTTONS[self._button]} button"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._button = int(self.np_random.integers(len(self.BUTTONS)))
        self._position = self._steps = 0
        return self._observation(), {}

    def step(self, action):
        self._steps += 1
        if int(action) == self._button:
            self._position += 1
        terminated = self._position == self.length
        truncated = not terminated and self._steps >= self.max_steps
        return self._observation(), float(terminated), terminated, truncated, {"success": terminated}


ENVS = {"bandit": TextBandit, "corridor": TextCorridor}


class VectorEncoder(Encoder):
    """A trainable linear layer over a float vector."""

    def __init__(self, input_dim: int, output_dim: int = 16) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.layer = nn.Sequential(nn.Linear(input_dim, output_dim), nn.ReLU())

    def forward(self, batch: Any) -> torch.Tensor:
        return self.layer(torch.as_tensor(np.asarray(batch), dtype=torch.float32))


class BagOfWordsEncoder(Encoder):
    """Word counts over a fixed vocabulary (unknown words share index 0), then a trainable layer."""

    def __init__(self, vocabulary: list[str], output_dim: int = 16) -> None:
        super().__init__()
        self.index = {word: i + 1 for i, word in enumerate(vocabulary)}
        self.output_dim = output_dim
        self.layer = nn.Sequential(nn.Linear(len(vocabulary) + 1, output_dim), nn.ReLU())

    def forward(self, batch: Any) -> torch.Tensor:
        counts = np.zeros((len(batch), len(self.index) + 1), dtype=np.float32)
        for row, text in enumerate(batch):
            for word in str(text).split():
                counts[row, self.index.get(word, 0)] += 1
        return self.layer(torch.from_numpy(counts))


VOCABULARY = ["please", "go", *TextBandit.WORDS, "press", "the", "button", *TextCorridor.BUTTONS]


def make_network(observation_space: gym.spaces.Dict) -> MultimodalNetwork:
    encoders = {
        "vector": VectorEncoder(observation_space["vector"].shape[0]),
        "text": BagOfWordsEncoder(VOCABULARY),
    }
    fuser = default_registry().create(
        "fusers", "concat", {}, input_dims={name: encoder.output_dim for name, encoder in encoders.items()}
    )
    return MultimodalNetwork(encoders, {"vector": "vector", "text": "text"}, fuser)


def make_vector_env(env: str = "bandit", num_envs: int = 4, seed: int = 0, **kwargs: Any) -> SnapshotVectorEnv:
    factory = ENVS[env]
    return snapshot_vector_env(lambda: factory(**kwargs), num_envs, seed)


def pipeline_for(envs: Any, seed: int = 0) -> Pipeline:
    return testing.pipeline_for(envs, lambda: make_network(envs.single_observation_space), seed)


@pytest.fixture
def make_pipeline() -> Callable[..., Pipeline]:
    """``make_pipeline(env="bandit"|"corridor", num_envs=4, seed=0, **env_kwargs)``."""
    made: list[Pipeline] = []

    def make(env: str = "bandit", num_envs: int = 4, seed: int = 0, **kwargs: Any) -> Pipeline:
        pipeline = pipeline_for(make_vector_env(env, num_envs, seed, **kwargs), seed)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.envs.close()


@pytest.fixture
def helpers() -> Any:
    """The module-level helpers above, for tests that need more than a pipeline."""

    class Helpers:
        TextBandit = TextBandit
        TextCorridor = TextCorridor
        make_vector_env = staticmethod(make_vector_env)
        pipeline_for = staticmethod(pipeline_for)
        make_network = staticmethod(make_network)

    return Helpers
