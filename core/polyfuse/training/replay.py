"""Trying another action where a recorded segment began: the outcome the policy did not choose, from the env itself.

A reward model that asks "which of two answers to this same question is better?" (the practice of RLHF
for language models: two completions of one prompt) needs the outcome of an answer the policy did not
give. The environment gives it honestly: a scratch copy, apart from the training environments, is
restored to the state recorded when the segment began and stepped with the other actions.
:class:`~polyfuse.training.vector_env.TrackedVectorEnv` records those states, and cuts
:class:`ReplayableSegment` s, when its environments can give them (see
:func:`~polyfuse.training.vector_env.episode_replayer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polyfuse.observations import select, stack
from polyfuse.rewards import Segment


class ContextReplayer:
    """Reads the environments' episode states, and replays one in a scratch environment built on first use."""

    def __init__(self, states: Callable[[], list[Any]], make_scratch: Callable[[], Any]) -> None:
        self.states = states
        self._make_scratch = make_scratch
        self._scratch: Any = None

    def step(self, state: Any, actions: Sequence[Any]) -> list[tuple[dict[str, Any], float, bool, bool, dict[str, Any]]]:
        """Restore ``state`` and take ``actions`` until the episode ends: gymnasium's 5-tuple per step taken."""
        if self._scratch is None:
            self._scratch = self._make_scratch()
        self._scratch.set_state(state)
        steps = []
        for action in actions:
            observation, reward, terminated, truncated, info = self._scratch.step(action)
            steps.append((observation, float(reward), bool(terminated), bool(truncated), dict(info)))
            if terminated or truncated:
                break
        return steps


@dataclass(frozen=True)
class ReplayableSegment(Segment):
    """A segment that remembers its environment's state when it began, so other actions can be tried from there."""

    start_state: Any = field(repr=False, compare=False)
    replayer: ContextReplayer = field(repr=False, compare=False)

    def replay(self, actions: Sequence[Any]) -> ReplayableSegment:
        """The segment ``actions`` lead to from this one's start (shorter if its episode ends first).

        Its first observation is this segment's; the rest, the rewards and the infos are the scratch
        environment's, so a counterfactual outcome is the environment's own, never a guess.
        """
        if not len(actions):
            raise ValueError("replay needs at least one action")
        steps = self.replayer.step(self.start_state, actions)
        observations = [select(self.observations, 0)] + [dict(step[0]) for step in steps[:-1]]
        return ReplayableSegment(
            observations=stack(observations),
            actions=np.asarray(list(actions)[: len(steps)]),
            env_rewards=np.asarray([step[1] for step in steps], dtype=np.float32),
            infos=tuple(step[4] for step in steps),
            terminated=steps[-1][2],
            truncated=steps[-1][3],
            env_index=self.env_index,
            start_state=self.start_state,
            replayer=self.replayer,
        )
