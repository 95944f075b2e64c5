"""Checks that task.py's fvi/CartPole-v0 is seals/CartPole-v0: same observations, rewards and flags for the
same seeds and actions (random actions, 20 episodes of 500 steps). Run in .venv-imitation (it has seals):

    benchmarks/feedback_vs_imitation/.venv-imitation/bin/python benchmarks/feedback_vs_imitation/check_task.py
"""

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import seals  # noqa: F401  (registers seals/CartPole-v0)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task

rng = np.random.default_rng(0)
for episode in range(20):
    ours, theirs = gym.make(task.BOX_ID), gym.make("seals/CartPole-v0")
    a, _ = ours.reset(seed=episode)
    b, _ = theirs.reset(seed=episode)
    assert np.array_equal(a, b) and ours.observation_space == theirs.observation_space
    for step in range(task.HORIZON):
        action = int(rng.integers(2))
        got, expected = ours.step(action), theirs.step(action)
        assert np.array_equal(got[0], expected[0]) and got[1:4] == expected[1:4], (episode, step, got, expected)
    assert got[3] and expected[3]  # truncated at the horizon
print("fvi/CartPole-v0 matches seals/CartPole-v0 on 20 random episodes")
