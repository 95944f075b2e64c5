"""The benchmark's task: seals/CartPole-v0 (fixed-horizon CartPole), as a Box env for imitation and as a
Dict env ({"state": Box}) for polyfuse, registered with gymnasium on import.

imitation's preference comparisons need a fixed horizon (variable-length CartPole-v1 crashes it with "No
trajectories are long enough") and refuse Dict observations; polyfuse pipelines need Dict observations. So
both sides run the same dynamics from this one module: seals' FixedHorizonCartPole (seals 0.2.1,
seals/classic_control.py), re-implemented here because seals is not in polyfuse's venv: CartPole physics
from gymnasium's CartPoleEnv, never terminated, truncated at 500 steps, reward 1 while the cart is within
±2.4 and the pole within ±12° (theta wrapped to [-pi, pi]), else 0. Returns range 0-500; a uniformly
random policy gets about 20-40. ``check_task.py`` (run in .venv-imitation) checks it step by step against
seals/CartPole-v0.

Works with gymnasium 0.29 (.venv-imitation) and 1.x (polyfuse's .venv).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import CartPoleEnv

BOX_ID = "fvi/CartPole-v0"        # imitation's side (and the equivalence check)
DICT_ID = "fvi/CartPoleDict-v0"   # polyfuse's side: observations {"state": <the same 4 floats>}
HORIZON = 500


class FixedHorizonCartPole(CartPoleEnv):
    """seals' FixedHorizonCartPole: reward 1.0 in an "ok" state, else 0.0; never terminated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        high = np.array([np.finfo(np.float32).max, np.finfo(np.float32).max, np.pi, np.finfo(np.float32).max],
                        dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        observation, info = super().reset(seed=seed, options=options)
        return observation.astype(np.float32), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        with warnings.catch_warnings():  # CartPoleEnv warns about stepping past its own termination
            warnings.filterwarnings("ignore", ".*You are calling.*")
            super().step(action)
        self.state = list(self.state)
        x, _, theta, _ = self.state
        theta = (theta + np.pi) % (2 * np.pi) - np.pi
        self.state[2] = theta
        ok = bool(abs(x) < self.x_threshold and abs(theta) < self.theta_threshold_radians)
        return np.array(self.state, dtype=np.float32), 1.0 if ok else 0.0, False, False, {}


class StateDict(gym.ObservationWrapper):
    """{"state": observation}: the Dict observation space polyfuse pipelines read modalities from."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = spaces.Dict({"state": env.observation_space})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"state": observation}


def make_dict_env(**kwargs: Any) -> gym.Env:
    return StateDict(FixedHorizonCartPole(**kwargs))


if BOX_ID not in gym.registry:
    gym.register(id=BOX_ID, entry_point=FixedHorizonCartPole, max_episode_steps=HORIZON)
if DICT_ID not in gym.registry:
    gym.register(id=DICT_ID, entry_point=make_dict_env, max_episode_steps=HORIZON)
