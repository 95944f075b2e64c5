"""The ceiling: how many env steps per second one core gives with no learning at all.

Steps ``--num-envs`` copies of the environment, as polyfuse builds them (text
mission, heading info, the cached MiniGrid view) in gymnasium's SyncVectorEnv,
with uniformly random actions, for ``--seconds``; the same with MiniGrid's
own view (``minigrid_view="stock"``); and one bare ``gymnasium.make``
environment (MiniGrid as it ships) the same way. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import gymnasium as gym
import numpy as np
import polyfuse.envs  # noqa: F401  (registers polyfuse's ids)
from polyfuse.envs import make_env, make_vector_env
from polyfuse.envs.babyai import import_minigrid


def rate(step: object, batch: int, seconds: float) -> float:
    """Env steps per second of ``step()`` (``batch`` env steps per call), over at least ``seconds``."""
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            step()
        steps += 50 * batch
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="BabyAI-GoToLocalS6N2-v0")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    envs = make_vector_env(args.env, num_envs=args.num_envs, seed=0)
    actions = envs.single_action_space.n
    vector = rate(lambda: envs.step(rng.integers(actions, size=args.num_envs)), args.num_envs, args.seconds)
    envs.close()
    stock_envs = gym.vector.SyncVectorEnv([partial(make_env, args.env, minigrid_view="stock")] * args.num_envs)
    stock_envs.reset(seed=0)
    stock = rate(lambda: stock_envs.step(rng.integers(actions, size=args.num_envs)), args.num_envs, args.seconds)
    stock_envs.close()

    import_minigrid()
    bare = gym.make(args.env)
    bare.reset(seed=0)

    def bare_step() -> None:
        _, _, terminated, truncated, _ = bare.step(int(rng.integers(actions)))
        if terminated or truncated:
            bare.reset()

    single = rate(bare_step, 1, args.seconds / 2)
    print(json.dumps({"env": args.env, "vector_env_steps_per_second": vector,
                      "stock_view_vector_env_steps_per_second": stock, "bare_env_steps_per_second": single}))


if __name__ == "__main__":
    main()
