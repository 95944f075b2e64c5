"""Stable-Baselines3 PPO on a BabyAI level, its environments in a DummyVecEnv or a SubprocVecEnv.

The network sees what polyfuse's ``flatten`` / ``sbert`` / ``onehot``
pipeline sees: the grid scaled to [0, 1] by its declared bounds, the mission
through the same bundled all-MiniLM-L6-v2 (one embedding per distinct
string, in the learner's process: SB3 cannot take text, its issues #1704 and
#1914), the heading one-hot (SB3 does that for Discrete spaces). In a
SubprocVecEnv each environment runs in its own process (SB3's design) and
sends its mission as bytes; the embedding happens in the learner's process
for both vec envs, so neither pays for a sentence-transformer per process.

Prints one JSON object on the last line: steps, steps_per_second and
wall_time_s of ``learn()``, held-out success and return (greedy, on the
episodes polyfuse's trainer evaluates on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym
import numpy as np
import polyfuse.envs  # noqa: F401  (registers polyfuse's ids)
import torch
from polyfuse.envs import eval_kwargs, make_env
from stable_baselines3.common.vec_env import VecEnvWrapper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rl_vs_sb3"))
from sb3_baseline import TextEmbedder, play_held_out


class TextAsBytes(gym.ObservationWrapper):
    """Text keys as fixed-length uint8 arrays (UTF-8, zero-padded): what a VecEnv of Box spaces can carry."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        spaces = dict(env.observation_space.spaces)
        self.text_keys = {key: space.max_length for key, space in spaces.items() if isinstance(space, gym.spaces.Text)}
        for key, length in self.text_keys.items():
            spaces[key] = gym.spaces.Box(0, 255, (length,), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        result = dict(observation)
        for key, length in self.text_keys.items():
            encoded = np.zeros(length, dtype=np.uint8)
            raw = observation[key].encode()[:length]
            encoded[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
            result[key] = encoded
        return result


def make_training_env(env_id: str, minigrid_view: str) -> gym.Env:
    return TextAsBytes(make_env(env_id, minigrid_view=minigrid_view))


class Features:
    """Text bytes to sentence embeddings, numeric boxes scaled to [0, 1] by their bounds (polyfuse's flatten)."""

    def __init__(self, space: gym.spaces.Dict, text_keys: dict[str, int], embedder: TextEmbedder) -> None:
        self.text_keys, self.embedder = text_keys, embedder
        self.scales = {key: (s.low.astype(np.float32), (s.high - s.low).astype(np.float32))
                       for key, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and key not in text_keys}
        spaces = dict(space.spaces)
        for key in text_keys:
            spaces[key] = gym.spaces.Box(-1.0, 1.0, (embedder.dim,), np.float32)
        for key, (_, span) in self.scales.items():
            spaces[key] = gym.spaces.Box(0.0, 1.0, span.shape, np.float32)
        self.space = gym.spaces.Dict(spaces)

    def __call__(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = dict(observations)
        for key in self.text_keys:
            rows = np.atleast_2d(observations[key])
            result[key] = np.stack([self.embedder(bytes(row).rstrip(b"\0").decode()) for row in rows])
        for key, (low, span) in self.scales.items():
            result[key] = (np.asarray(observations[key], dtype=np.float32) - low) / span
        return result


class VecFeatures(VecEnvWrapper):
    def __init__(self, venv: Any, features: Features) -> None:
        super().__init__(venv, observation_space=features.space)
        self.features = features

    def reset(self) -> Any:
        return self.features(self.venv.reset())

    def step_wait(self) -> Any:
        observations, rewards, dones, infos = self.venv.step_wait()
        for info in infos:  # the final observation SB3 bootstraps truncated episodes from
            if "terminal_observation" in info:
                single = self.features({k: v[None] for k, v in info["terminal_observation"].items()})
                info["terminal_observation"] = {k: v[0] for k, v in single.items()}
        return self.features(observations), rewards, dones, infos


def evaluate(model: Any, env_id: str, features: Features, episodes: int, minigrid_view: str) -> dict[str, float]:
    """Greedy policy on the held-out episodes polyfuse evaluates on (seeds from EVAL_SEED_BASE)."""

    def prepare(observation: dict[str, Any]) -> dict[str, np.ndarray]:
        batch = features({key: np.asarray(value)[None] for key, value in observation.items()})
        return {key: value[0] for key, value in batch.items()}

    env = TextAsBytes(make_env(env_id, eval_kwargs(env_id, {}), minigrid_view=minigrid_view))
    return play_held_out(model, env, prepare, episodes, deterministic=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="BabyAI-GoToLocalS6N2-v0")
    parser.add_argument("--vec-env", choices=["dummy", "subproc"], required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--hparams", default="{}", help="JSON of SB3 PPO constructor arguments")
    parser.add_argument("--minigrid-view", choices=["stock", "indexed"], default="stock",
                        help="MiniGrid's own view (what SB3 users run) or polyfuse's cached one (same observations)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    from functools import partial

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    env_fns = [partial(make_training_env, args.env, args.minigrid_view)] * args.num_envs
    raw = DummyVecEnv(env_fns) if args.vec_env == "dummy" else SubprocVecEnv(env_fns)
    raw.seed(args.seed)
    probe = TextAsBytes(make_env(args.env))
    features = Features(raw.observation_space, probe.text_keys, TextEmbedder())
    envs = VecFeatures(raw, features)
    model = PPO("MultiInputPolicy", envs, seed=args.seed, device="cpu", verbose=0, **json.loads(args.hparams))
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - start
    envs.close()
    held_out = evaluate(model, args.env, features, args.eval_episodes, args.minigrid_view)
    print(json.dumps({"library": "stable-baselines3", "vec_env": args.vec_env, "steps": int(model.num_timesteps),
                      "wall_time_s": wall, "steps_per_second": model.num_timesteps / wall, "held_out": held_out}))


if __name__ == "__main__":
    main()
