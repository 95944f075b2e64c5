"""A simulated deployment of a served policy: plays its environment's episodes through ``polyfuse serve``.

Each step's observation goes to ``POST /v1/act`` under the episode's id, the answer is played in the
environment, and the reward it gave and whether the episode ended go to ``POST /v1/outcome``: with
``polyfuse serve RUN --log-feedback DB`` the server records these episodes, with their true rewards,
in the label store (what a deployment that observes outcomes would report). Held-out episodes (the
environment's evaluation settings) by default. Prints the mean return and the steps each model served.

    python examples/serve_simulated_client.py --url http://127.0.0.1:8000 --episodes 200
"""

from __future__ import annotations

import argparse
import json
import urllib.request
import uuid
from collections import Counter
from typing import Any

import numpy as np


def call(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def as_json(observation: dict[str, Any]) -> dict[str, Any]:
    return {key: value.tolist() if isinstance(value, np.ndarray) else
            value.item() if isinstance(value, np.generic) else str(value) if not isinstance(value, (int, float)) else value
            for key, value in observation.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default %(default)s)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes to play (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the first episode's seed (default %(default)s)")
    parser.add_argument("--train-settings", action="store_true",
                        help="the environment's training settings instead of its held-out ones")
    args = parser.parse_args()

    from polyfuse.envs import eval_kwargs, make_env

    env_id = call(args.url, "/health")["env"]
    env = make_env(env_id, {} if args.train_settings else eval_kwargs(env_id, {}))
    returns, steps_by_model = [], Counter()
    for episode in range(args.episodes):
        observation, _ = env.reset(seed=args.seed + episode)
        episode_id, total, done = uuid.uuid4().hex, 0.0, False
        while not done:
            answer = call(args.url, "/v1/act", {"observation": as_json(observation), "episode": episode_id})
            steps_by_model[answer["step"]] += 1
            observation, reward, terminated, truncated, _ = env.step(answer["action"])
            done = bool(terminated or truncated)
            total += float(reward)
            call(args.url, "/v1/outcome", {"episode": episode_id, "reward": float(reward), "done": done})
        returns.append(total)
    env.close()
    served = ", ".join(f"{count} by the model of step {step}" for step, count in sorted(steps_by_model.items()))
    print(f"{args.episodes} episodes of {env_id}: mean return {np.mean(returns):.3f}; steps answered: {served}")


if __name__ == "__main__":
    main()
