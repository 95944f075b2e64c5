"""Off-policy learners (DQN and kin): explore, keep transitions in replay, learn from sampled batches.

Each ``iterate`` takes ``train_frequency`` vector-env steps with the
subclass's exploration, turns them into n-step transitions in the replay
buffer, then, once ``learning_starts`` environment steps are in, makes
``gradient_steps`` updates on uniformly sampled batches.

Rewards: a stationary reward source (the environment's) is scored as
transitions are collected, and replay holds the scored (n-step) rewards. A
reward source that is not stationary (one that learns during the run) would
go stale in replay, so replay holds the environment's rewards instead and
every sampled batch is scored with the reward source as it is at that
gradient step (PEBBLE-style relabelling, Lee et al. 2021). An n-step sum
would need its intermediate transitions re-scored too, so n_step must then
be 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from polyfuse.errors import PolyfuseError
from polyfuse.observations import check_dict
from polyfuse.rewards import RewardBatch
from polyfuse.rl.base import Algorithm, GeneratorKind
from polyfuse.rl.configs import OffPolicyConfig
from polyfuse.rl.nstep import NStepAccumulator
from polyfuse.rl.replay import ReplayBuffer, Transitions
from polyfuse.training.api import Pipeline


class OffPolicyAlgorithm(Algorithm):
    """Replay of raw observations, n-step returns and the collect-then-learn loop; a subclass explores and learns.

    A subclass sets ``name`` (and ``state_format``), implements
    :meth:`_build` (networks and ``self.adam``), :meth:`_explore`,
    :meth:`_gradient_step` (calling :meth:`Algorithm._descend`, which counts
    progress), ``act``, ``action_logits`` and ``trainable_parameters``, and may
    add random streams (listing ``replay`` first). Its config subclasses
    :class:`~polyfuse.rl.configs.OffPolicyConfig`.

    The environments are reset without a seed: seed them when building them
    (``polyfuse.envs.make_vector_env`` does). A resumed run continues the
    saved episodes when the trainer could restore the environments, else
    plays new ones from environments seeded anew.
    """

    config: OffPolicyConfig
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {"replay": "numpy"}

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        super()._check_pipeline(pipeline)
        assert pipeline.reward is not None
        if self.config.n_step > 1 and not pipeline.reward.stationary:
            raise PolyfuseError(
                f"{self.name}: optimizer.params.n_step is {self.config.n_step}, but the reward source "
                f"{type(pipeline.reward).__name__} is not stationary (it may change during the run), so every "
                "sampled transition is scored anew and an n-step sum of stored rewards would go stale. "
                "Set optimizer.params.n_step: 1, or use a stationary reward (reward: env)"
            )

    def setup(self, pipeline: Pipeline) -> None:
        """Build (:meth:`_build`), make the replay buffer and n-step accumulator; reset the environments."""
        super().setup(pipeline)
        config = self.config
        self.envs = pipeline.envs
        self.replay = ReplayBuffer(config.buffer_size, self.rng["replay"])
        self.nstep = NStepAccumulator(config.n_step, config.gamma, self.envs.num_envs)
        observations, _ = self.envs.reset()
        self._observations = check_dict(observations, self.name)

    # --- learning ---------------------------------------------------------------------------------

    def _explore(self, observations: Mapping[str, Any]) -> np.ndarray:
        """The environment actions to take in ``observations`` while collecting."""
        raise NotImplementedError

    def _gradient_step(self, batch: Transitions) -> dict[str, float]:
        """One update on a sampled batch (rewards scored); returns scalar metrics (averaged over the iterate)."""
        raise NotImplementedError

    def _iterate(self) -> dict[str, float]:
        config = self.config
        reward = self.pipeline.reward
        assert reward is not None
        for _ in range(config.train_frequency):
            actions = self._explore(self._observations)
            observations, env_rewards, terminated, truncated, _ = self.envs.step(actions)
            rewards = self._score(RewardBatch(self._observations, actions, env_rewards, terminated, truncated)) \
                if reward.stationary else env_rewards
            completed = self.nstep.push(
                self._observations, actions, rewards, terminated, truncated, self.envs.next_observations
            )
            if completed is not None:
                self.replay.add(completed)
            self._observations = observations
            self._count_env_steps(self.envs.num_envs)
        metrics = {"buffer_size": float(len(self.replay))}
        if self.env_steps >= config.learning_starts and len(self.replay) > 0:
            steps = [self._gradient_step(self._sample()) for _ in range(config.gradient_steps)]
            metrics.update({key: float(np.mean([step[key] for step in steps])) for key in steps[0]})
        return metrics

    def _sample(self) -> Transitions:
        """A batch from replay; a non-stationary reward source scores its (stored environment) rewards now."""
        batch = self.replay.sample(self.config.batch_size)
        reward = self.pipeline.reward
        assert reward is not None
        if not reward.stationary:
            batch.rewards = self._score(
                RewardBatch(batch.observations, batch.actions, batch.rewards, batch.terminated, batch.truncated)
            )
        return batch

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Besides :meth:`Algorithm.state_dict`'s: the replay buffer's contents and the steps awaiting their n-step return.

        Checkpoints grow with the buffer.
        """
        return {
            **super().state_dict(),
            "replay": self.replay.state_dict(),
            "nstep": self.nstep.state_dict(),
            "observations": dict(self._observations),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` after :meth:`setup`.

        Environment state is not part of an optimizer's state. When the
        trainer has restored the environments' saved episodes
        (``envs.restored``, see :meth:`TrackedVectorEnv.set_state`), they
        continue: the saved observations and the steps awaiting their n-step
        return carry on as if never interrupted. Otherwise the environments
        keep the episodes ``setup`` started, and the steps still waiting for
        their n-step return belong to episodes that will not continue, so
        they are closed as truncated there (bootstrapping from the
        observation at save time) and added to the replay buffer.
        """
        super().load_state_dict(state)
        self.replay.load_state_dict(state["replay"])
        if getattr(self.envs, "restored", False):
            self.nstep.load_state_dict(state["nstep"])
            self._observations = check_dict(self.envs.observations, self.name)
            return
        closed = self.nstep.close_saved(state["nstep"], state["observations"])
        if closed is not None:
            self.replay.add(closed)
