"""n-step returns over a vector env with same-step autoreset.

Each environment keeps the last steps whose n-step return is not complete
yet. A step is complete ``n`` steps later (reward sum over ``n`` steps,
bootstrapped with ``gamma ** n`` from the observation then), or when its
episode ends first: all its pending steps are closed with the rewards up to
the end. Termination stops bootstrapping (the episode is over, its future is
worth 0); truncation does not (the episode was cut, so the TD target still
bootstraps, from the *final* observation, not from the reset one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polyfuse.observations import Single, batch_length, select, stack
from polyfuse.rl.replay import Transitions

Pending = tuple[Single, Any, float]  # observation, action, reward
# observation, action, discounted reward, next observation, terminated, truncated, horizon
Row = tuple[Single, Any, float, Single, bool, bool, int]


class NStepAccumulator:
    """Turns vector-env steps into n-step transitions, per environment."""

    def __init__(self, n: int, gamma: float, num_envs: int) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = int(n)
        self.gamma = float(gamma)
        self.num_envs = int(num_envs)
        self._pending: list[deque[Pending]] = [deque() for _ in range(self.num_envs)]

    def push(
        self,
        observations: Mapping[str, Any],
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: Mapping[str, Any],
    ) -> Transitions | None:
        """Record one vector step; returns the transitions it completes (None if none).

        ``observations`` are those the actions were taken in; ``next_observations``
        the ones after the step, with each finished env's final observation in
        place of its reset one (``TrackedVectorEnv.next_observations``).
        """
        if batch_length(observations) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} environments, got {batch_length(observations)}")
        if self.n == 1:  # every step completes at once: the whole batch is the transitions
            return _transitions(observations, actions, rewards, next_observations, terminated,
                                np.asarray(truncated) & ~np.asarray(terminated), np.ones(self.num_envs))
        rows: list[Row] = []
        for env in range(self.num_envs):
            queue = self._pending[env]
            queue.append((select(observations, env), np.array(actions[env]), float(rewards[env])))
            if terminated[env] or truncated[env]:
                rows += self._close(queue, select(next_observations, env), terminated=bool(terminated[env]))
            elif len(queue) == self.n:
                rows.append(self._complete(queue, select(next_observations, env)))
        return self._batch(rows)

    def _complete(self, queue: deque[Pending], next_observation: Single) -> Row:
        """The oldest pending step, now with its full n rewards."""
        observation, action, _ = queue[0]
        row = (observation, action, self._discounted(queue), next_observation, False, False, len(queue))
        queue.popleft()
        return row

    def _close(self, queue: deque[Pending], next_observation: Single, terminated: bool) -> list[Row]:
        """Every pending step of an episode that just ended (cut, unless ``terminated``), with the rewards up to its end."""
        rows = []
        while queue:
            observation, action, _ = queue[0]
            discounted = self._discounted(queue)
            rows.append((observation, action, discounted, next_observation, terminated, not terminated, len(queue)))
            queue.popleft()
        return rows

    def _discounted(self, queue: Sequence[Pending]) -> float:
        total, discount = 0.0, 1.0
        for _, _, reward in queue:
            total += discount * reward
            discount *= self.gamma
        return total

    @staticmethod
    def _batch(rows: list[Row]) -> Transitions | None:
        if not rows:
            return None
        observations, actions, rewards, next_observations, terminated, truncated, horizons = zip(*rows)
        return _transitions(stack(observations), actions, rewards, stack(next_observations), terminated, truncated,
                            horizons)

    @property
    def pending_count(self) -> int:
        return sum(len(queue) for queue in self._pending)

    def state_dict(self) -> dict[str, Any]:
        """The pending steps of every env, oldest first (``observations`` is None when there are none)."""
        entries = [(env, item) for env, queue in enumerate(self._pending) for item in queue]
        if not entries:
            return {"env": np.zeros(0, dtype=np.int64), "observations": None,
                    "actions": np.zeros(0, dtype=np.int64), "rewards": np.zeros(0, dtype=np.float64)}
        return {
            "env": np.asarray([env for env, _ in entries], dtype=np.int64),
            "observations": stack([item[0] for _, item in entries]),
            "actions": np.asarray([item[1] for _, item in entries]),
            "rewards": np.asarray([item[2] for _, item in entries], dtype=np.float64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s pending steps, to continue their episodes (restored environments)."""
        self._pending = [deque() for _ in range(self.num_envs)]
        observations = state["observations"]
        for index, env in enumerate(np.asarray(state["env"], dtype=np.int64).tolist()):
            item = (select(observations, index), np.array(state["actions"][index]), float(state["rewards"][index]))
            self._pending[env].append(item)

    def close_saved(self, state: Mapping[str, Any], last_observations: Mapping[str, Any]) -> Transitions | None:
        """Close the pending steps of a saved accumulator as truncated episodes.

        A resumed run starts new episodes, so the episodes that were running
        when the state was saved are cut there: their pending steps bootstrap
        from ``last_observations`` (each env's observation at save time).
        """
        envs = np.asarray(state["env"], dtype=np.int64)
        if len(envs) == 0:
            return None
        observations = state["observations"]
        queues: dict[int, deque[Pending]] = {}
        for index, env in enumerate(envs.tolist()):
            item = (select(observations, index), np.array(state["actions"][index]), float(state["rewards"][index]))
            queues.setdefault(env, deque()).append(item)
        rows = []
        for env, queue in queues.items():
            rows += self._close(queue, select(last_observations, env), terminated=False)
        return self._batch(rows)


def _transitions(
    observations: Mapping[str, Any],
    actions: Any,
    rewards: Any,
    next_observations: Mapping[str, Any],
    terminated: Any,
    truncated: Any,
    horizons: Any,
) -> Transitions:
    """Transitions with the replay buffer's dtypes."""
    return Transitions(
        observations=dict(observations),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        next_observations=dict(next_observations),
        terminated=np.asarray(terminated, dtype=np.bool_),
        truncated=np.asarray(truncated, dtype=np.bool_),
        horizons=np.asarray(horizons, dtype=np.int64),
    )
