"""The sampling schedule shared by the samplers whose env runners act with a copy of the policy.

``env.vectorization: pipelined`` (worker processes, :mod:`polyfuse.sampling.pipelined`)
and ``env.vectorization: ray`` (Ray actors, :mod:`polyfuse.sampling.ray_sampler`)
hand an on-policy optimizer (PPO, A2C) a :class:`Sampler` instead of a vector
env. Each of ``env.workers`` runners (:class:`~polyfuse.sampling.worker.RolloutWorker`)
holds its share of the ``env.num_envs`` environments and a copy of the
actor-critic, and collects ``n_steps`` steps with it, acting (inference
included) in its own process. The learner meanwhile updates on the rollout
before. The schedule, per ``collect`` (one per ``iterate``):

1. wait for rollout *k* (collected with the weights published at step 2 of
   the previous ``collect``);
2. publish the learner's current weights (the runners are idle, so nothing
   reads them while they change) and order rollout *k + 1*;
3. return rollout *k*; the learner updates on it while the runners collect.

So rollout *k + 1* is collected with the weights before update *k* and
learnt from after it: **the behaviour policy is exactly one update old**
(zero for the first rollout, and for the first after a resume or warm
start, which are collected on demand). Every rollout carries the version it
was collected with, and :meth:`Sampler.collect` refuses one of any other
version (``lag``: 1 when one update late, 0 when on-policy). PPO corrects
for the lag as decoupled PPO by default (its ``lag_correction``): the ratio
clipped around the learner's policy, and the advantages weighted by
pi_learner / pi_behaviour from the log-probabilities the runners stored;
GAE and the value targets use the values the runners stored (the behaviour
critic's, one update old: recomputing them did not help held-out success,
docs/pipelined-sampling.md). A2C has no ratio: it learns from the
one-update-old data uncorrected.

The transports differ in how weights travel and rollouts come back, which a
subclass supplies (:meth:`Sampler._start`, ``_build``, ``_publish``,
``_order_rollouts``, ``_rollouts``, :meth:`Sampler.close`); rollouts are numpy
arrays and built-in values (observations, text as object arrays; episodes;
reward-model segments). Episodes and segments reach the trainer through
:meth:`Sampler.pop_episodes` and :meth:`Sampler.pop_segments` as with
:class:`~polyfuse.training.vector_env.TrackedVectorEnv`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from polyfuse.config import PipelineConfig
from polyfuse.errors import PolyfuseError
from polyfuse.observations import ObservationColumns
from polyfuse.rewards import Segment
from polyfuse.training.distributed import ranks
from polyfuse.training.vector_env import EpisodeRecord

if TYPE_CHECKING:
    from polyfuse.rl.configs import OnPolicyConfig
    from polyfuse.rl.distributions import ActionLayout
    from polyfuse.rl.on_policy import CollectedSteps

SEED_BOUND = 2**62


def default_workers(num_envs: int, learners: int = 1) -> int:
    """A learner's workers: one per core the ``learners`` (data-parallel ranks) leave free, shared out evenly (at
    least one), no more than its ``num_envs`` environments."""
    return max(1, min(num_envs, ((os.cpu_count() or 2) - learners) // learners))


def split_envs(num_envs: int, workers: int) -> list[int]:
    """How many environments each worker steps: as even as possible, the first ones taking the remainder."""
    return [len(part) for part in np.array_split(np.arange(num_envs), workers)]


class Sampler:
    """Environments stepped by env runners with a copy of the policy at most one update old.

    To the trainer it looks like a vector env (``num_envs``, spaces,
    ``env_steps``, ``env_time_s``, :meth:`pop_episodes`, :meth:`pop_segments`,
    :meth:`get_state`, :meth:`close`); to an on-policy optimizer it is a
    source of rollouts (:meth:`attach`, then :meth:`collect`). It cannot be
    stepped one step at a time: optimizers that do (DQN) are refused.
    """

    vectorization = ""  # the env.vectorization value that picks the subclass (for messages)
    metadata: Mapping[str, Any] = {}
    restored = False  # runner environments cannot be saved without pickle: a resume reseeds them

    def __init__(self, config: PipelineConfig, seed: int, segment_length: int | None = None) -> None:
        env = config.env
        if env is None:
            raise PolyfuseError(f"env.vectorization: {self.vectorization} needs an environment (env: {{id: ...}})")
        from polyfuse.envs import make_env

        probe = make_env(env.id, env.kwargs)  # a bad id or kwargs fail here, not in a runner
        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        probe.close()
        self.config = config
        self.ranks = ranks()  # a rank of a data-parallel run samples its share (config is the rank's share)
        self.num_envs = env.num_envs
        self.workers = env.workers or default_workers(env.num_envs, self.ranks.size)
        self.segment_length = segment_length  # set before attach(): the runners record segments of this length
        self.env_steps = 0
        self.env_time_s = 0.0
        self.wait_s = 0.0  # the learner's time spent waiting for rollouts
        self.published = 0  # the version of the weights last published (the runners act with it next)
        self.behaviour_version = 0  # the version the last rollout handed over was collected with
        self.lag = 0  # learner updates between publishing the last rollout's weights and handing it over
        self._collects = 0  # collect() calls completed: the learner's updates, one per call
        self._published_at = 0  # self._collects when the in-flight version was published
        self._episodes: list[EpisodeRecord] = []
        self._segments: list[Segment] = []
        self._mutable: list[str] = []
        self._in_flight = False
        self._generator: torch.Generator | None = None
        self._offsets: list[int] = []  # the index of each runner's first environment in the whole
        self._setups: list[dict[str, Any]] = []  # each runner's environments: what a runner is built from
        offset = 0
        for count in split_envs(env.num_envs, self.workers):
            self._offsets.append(offset)
            self._setups.append({"env_id": env.id, "env_kwargs": dict(env.kwargs), "num_envs": count,
                                 "vectorization": "sync", "seed": seed + offset,
                                 "num_threads": config.trainer.num_threads})
            offset += count
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- what a transport supplies ---------------------------------------------------------------

    def _start(self) -> None:
        """Start one runner per ``self._setups`` entry (environments built, network not yet)."""
        raise NotImplementedError

    def _build(self, spec: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        """Have every runner build its actor-critic from ``spec`` with the learner's weights ``state``."""
        raise NotImplementedError

    def _publish(self, state: Mapping[str, torch.Tensor]) -> None:
        """Make ``state`` (the entries training changes) the weights the next ordered rollouts act with."""
        raise NotImplementedError

    def _order_rollouts(self, version: int, n_steps: int, seeds: list[int | None]) -> None:
        """Have every runner collect ``n_steps`` with the weights last published (``version``)."""
        raise NotImplementedError

    def _rollouts(self) -> list[dict[str, Any]]:
        """The ordered rollouts, runner by runner, as they come back (waiting for them)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the runners (an in-flight rollout is dropped)."""
        raise NotImplementedError

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        self.close()

    # --- the optimizer's side --------------------------------------------------------------------

    def attach(self, model: torch.nn.Module, layout: ActionLayout, config: OnPolicyConfig,
               generator: torch.Generator) -> None:
        """Have every runner build a copy of ``model`` (an ActorCritic built with ``config``).

        ``generator`` (the optimizer's rollout stream) seeds the runners' action sampling at the first collect.
        """
        frozen = frozen_prefixes(model)
        state = model.state_dict()
        self._mutable = [key for key in state if not key.startswith(frozen)]
        self._generator = generator
        spec = {
            "pipeline": self.config.model_dump(mode="json"),
            "optimizer": self.config.optimizer.name,
            "actor_critic": {"shared_trunk": config.shared_trunk, "hidden_sizes": list(config.hidden_sizes),
                             "activation": config.activation, "ortho_init": config.ortho_init},
            "mutable": self._mutable,
            "segment_length": self.segment_length,
        }
        self._build(spec, state)

    def collect(self, model: torch.nn.Module, n_steps: int) -> CollectedSteps:
        """The next rollout, collected with ``model``'s weights one update ago; orders the one after.

        Call once per update: the lag is counted in calls. ``model`` is the
        learner's actor-critic as it is now, before updating on the rollout returned.
        """
        if self._generator is None:
            raise RuntimeError("attach() the model before collect()")
        seeds: list[int | None] = [None] * self.workers
        if not self._in_flight:  # the first rollout, or the first after a resume or warm start
            if self.published == 0:
                seeds = self._draw_seeds(self.workers)
            self._order(model, n_steps, seeds)
        started = time.perf_counter()
        payloads = self._rollouts()
        self.wait_s += time.perf_counter() - started
        versions = {int(payload["version"]) for payload in payloads}
        if versions != {self.published}:
            raise RuntimeError(f"{self.vectorization} sampler: rollout of weight versions {sorted(versions)}, "
                               f"expected {self.published}: the policy lag would exceed one update")
        self.behaviour_version, self.lag = self.published, self._collects - self._published_at
        self._order(model, n_steps, [None] * self.workers)
        self._collects += 1
        return self._merge(payloads, n_steps)

    def _draw_seeds(self, count: int) -> list[int]:
        """Seeds for runners' action samplers, from the optimizer's rollout stream."""
        assert self._generator is not None
        return torch.randint(0, SEED_BOUND, (count,), generator=self._generator).tolist()

    def _order(self, model: torch.nn.Module, n_steps: int, seeds: list[int | None]) -> None:
        """Publish ``model``'s weights as the next version and have every runner collect with them."""
        state = model.state_dict()
        self._publish({key: state[key] for key in self._mutable})
        self.published += 1
        self._published_at = self._collects
        self._order_rollouts(self.published, n_steps, seeds)
        self._in_flight = True

    def _merge(self, payloads: list[dict[str, Any]], n_steps: int) -> CollectedSteps:
        """The runners' rollouts side by side: env ``i`` of the whole is runner by runner, in order."""
        from polyfuse.rl.on_policy import CollectedSteps

        def side_by_side(key: str) -> np.ndarray:
            return np.concatenate([payload[key] for payload in payloads], axis=1)

        def rows(columns: list[np.ndarray]) -> np.ndarray:
            parts = [column.reshape(n_steps, -1, *column.shape[1:]) for column in columns]
            merged = np.concatenate(parts, axis=1)
            return merged.reshape(-1, *merged.shape[2:])

        keys = payloads[0]["observations"].keys()
        observations = {key: rows([payload["observations"][key] for payload in payloads]) for key in keys}
        env_actions = side_by_side("env_actions")
        for payload, offset in zip(payloads, self._offsets):
            self._episodes += (EpisodeRecord(float(r), int(n), bool(s)) for r, n, s in payload["episodes"])
            self._segments += (dataclasses.replace(segment, env_index=offset + segment.env_index)
                               for segment in payload["segments"])
            self.env_time_s += float(payload["env_time_s"])
        collected = CollectedSteps(
            ObservationColumns(observations),
            torch.from_numpy(side_by_side("actions")),
            torch.from_numpy(side_by_side("log_probs")),
            torch.from_numpy(side_by_side("values")),
            torch.from_numpy(side_by_side("final_values")),
            torch.from_numpy(np.concatenate([payload["last_values"] for payload in payloads])),
            side_by_side("env_rewards"),
            side_by_side("terminated"),
            side_by_side("truncated"),
            env_actions.reshape(-1, *env_actions.shape[2:]),
        )
        self.env_steps += n_steps * self.num_envs
        return collected

    def metrics(self) -> dict[str, float]:
        """The behaviour policy's lag (updates) and the learner's time spent waiting for rollouts since the last call."""
        wait, self.wait_s = self.wait_s, 0.0
        return {"policy_lag": float(self.lag), "sampler_wait_s": wait}

    # --- the trainer's side ----------------------------------------------------------------------

    def pop_episodes(self) -> list[EpisodeRecord]:
        """Episodes finished in the rollouts handed over since the last call."""
        finished, self._episodes = self._episodes, []
        return finished

    def pop_segments(self) -> list[Segment]:
        """Segments completed in the rollouts handed over since the last call (with ``segment_length`` set)."""
        segments, self._segments = self._segments, []
        return segments

    def get_state(self) -> None:
        """Runner environments are not saved: a resumed run plays freshly seeded episodes."""
        return

    def reset(self, seed: Any = None) -> Any:
        raise PolyfuseError(
            f"env.vectorization: {self.vectorization} feeds on-policy optimizers (ppo, a2c) whole rollouts; this "
            "optimizer steps the environments itself: use env.vectorization sync, async or native"
        )

    step = reset


def frozen_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the frozen encoders in ``model`` (their weights never change: shared once)."""
    from polyfuse.network import MultimodalNetwork

    prefixes = []
    for path, network in model.named_modules():
        if isinstance(network, MultimodalNetwork):
            prefixes += [f"{path}.encoders.{modality}." if path else f"encoders.{modality}."
                         for modality, encoder in network.encoders.items() if not encoder.trainable]
    return tuple(prefixes)
