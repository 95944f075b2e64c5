"""Pipelined sampling: worker processes step the environments while the learner updates.

``env.vectorization: pipelined`` hands an on-policy optimizer (PPO, A2C) a
:class:`PipelinedSampler` instead of a vector env. Each of ``env.workers``
spawned processes holds its share of the ``env.num_envs`` environments and
a copy of the actor-critic, and collects ``n_steps`` steps with it, acting
(inference included) in its own process. The learner meanwhile updates on the
rollout before. The schedule, per ``collect`` (one per ``iterate``):

1. wait for rollout *k* (collected with the weights published at step 2 of
   the previous ``collect``);
2. publish the learner's current weights into shared memory (the workers
   are idle, so nothing reads them while they change) and order rollout
   *k + 1*;
3. return rollout *k*; the learner updates on it while the workers collect.

So rollout *k + 1* is collected with the weights before update *k* and
learnt from after it: **the behaviour policy is exactly one update old**
(zero for the first rollout, and for the first after a resume or warm
start, which are collected on demand). Every rollout carries the version it
was collected with, and :meth:`PipelinedSampler.collect` refuses one of any
other version. PPO corrects for the lag with its clipped importance ratio,
taken against the log-probabilities the workers stored (the behaviour
policy's); GAE and the value targets use the values the workers stored (the
behaviour critic's, one update old: no extra forward pass on the learner,
which is the bottleneck this exists to relieve). A2C has no ratio: it learns
from the one-update-old data uncorrected.

Weights travel as torch shared-memory tensors (one per state-dict entry, sent
once when the workers build their networks); each publish copies the
entries training may change (everything but frozen encoders). Rollouts come
back over a pipe as numpy arrays and built-in values (observations, text as
object arrays; episodes; reward-model segments). Episodes and segments reach
the trainer through :meth:`pop_episodes` and :meth:`pop_segments` as with
:class:`~polyfuse.training.vector_env.TrackedVectorEnv`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
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
from polyfuse.sampling.worker import run_worker
from polyfuse.training.vector_env import EpisodeRecord

if TYPE_CHECKING:
    from polyfuse.rl.configs import OnPolicyConfig
    from polyfuse.rl.distributions import ActionLayout
    from polyfuse.rl.on_policy import CollectedSteps

START_TIMEOUT_S = 600.0
"""How long a worker may take to build its environments or its network (a sentence-transformer loads in seconds)."""
CLOSE_TIMEOUT_S = 5.0
POLL_S = 0.5
SEED_BOUND = 2**62


def default_workers(num_envs: int) -> int:
    """One worker per core the learner leaves free (at least one), no more than there are environments."""
    return max(1, min(num_envs, (os.cpu_count() or 2) - 1))


def split_envs(num_envs: int, workers: int) -> list[int]:
    """How many environments each worker steps: as even as possible, the first ones taking the remainder."""
    return [len(part) for part in np.array_split(np.arange(num_envs), workers)]


class PipelinedSampler:
    """Environments stepped by worker processes with a copy of the policy at most one update old.

    To the trainer it looks like a vector env (``num_envs``, spaces,
    ``env_steps``, ``env_time_s``, :meth:`pop_episodes`, :meth:`pop_segments`,
    :meth:`get_state`, :meth:`close`); to an on-policy optimizer it is a
    source of rollouts (:meth:`attach`, then :meth:`collect`). It cannot be
    stepped one step at a time: optimizers that do (DQN) are refused.
    """

    metadata: Mapping[str, Any] = {}
    restored = False  # worker environments cannot be saved without pickle: a resume reseeds them

    def __init__(self, config: PipelineConfig, seed: int, segment_length: int | None = None) -> None:
        env = config.env
        if env is None:
            raise PolyfuseError("env.vectorization: pipelined needs an environment (env: {id: ...})")
        from polyfuse.envs import make_env

        probe = make_env(env.id, env.kwargs)  # a bad id or kwargs fail here, not in a worker
        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        probe.close()
        self.config = config
        self.num_envs = env.num_envs
        self.workers = env.workers or default_workers(env.num_envs)
        self.segment_length = segment_length  # set before attach(): the workers record segments of this length
        self.env_steps = 0
        self.env_time_s = 0.0
        self.wait_s = 0.0  # the learner's time spent waiting for rollouts
        self.published = 0  # the version of the weights last published (the workers act with it next)
        self.behaviour_version = 0  # the version the last rollout handed over was collected with
        self.lag = 0  # learner updates between publishing the last rollout's weights and handing it over
        self._collects = 0  # collect() calls completed: the learner's updates, one per call
        self._published_at = 0  # self._collects when the in-flight version was published
        self._episodes: list[EpisodeRecord] = []
        self._segments: list[Segment] = []
        self._shared: dict[str, torch.Tensor] = {}
        self._mutable: list[str] = []
        self._in_flight = False
        self._generator: torch.Generator | None = None
        self._processes: list[Any] = []
        self._connections: list[Any] = []
        self._offsets: list[int] = []  # the index of each worker's first environment in the whole
        context = multiprocessing.get_context("spawn")
        offset = 0
        try:
            for index, count in enumerate(split_envs(env.num_envs, self.workers)):
                self._offsets.append(offset)
                parent_end, child_end = context.Pipe()
                setup = {"env_id": env.id, "env_kwargs": dict(env.kwargs), "num_envs": count, "vectorization": "sync",
                         "seed": seed + offset,
                         "num_threads": config.trainer.num_threads}
                process = context.Process(target=run_worker, args=(child_end, os.getpid(), setup),
                                          name=f"polyfuse-sampler-{index}", daemon=True)
                process.start()
                child_end.close()
                self._processes.append(process)
                self._connections.append(parent_end)
                offset += count
            for index in range(self.workers):
                self._receive(index, "ready", START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    # --- the optimizer's side --------------------------------------------------------------------

    def attach(self, model: torch.nn.Module, layout: ActionLayout, config: OnPolicyConfig,
               generator: torch.Generator) -> None:
        """Have every worker build a copy of ``model`` (an ActorCritic built with ``config``) on shared weights.

        ``generator`` (the optimizer's rollout stream) seeds the workers' action sampling at the first collect.
        """
        frozen = frozen_prefixes(model)
        state = model.state_dict()
        self._shared = {key: value.detach().clone().share_memory_() for key, value in state.items()}
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
        for connection in self._connections:
            connection.send(("build", spec, self._shared))
        for index in range(self.workers):
            self._receive(index, "built", START_TIMEOUT_S)

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
                seeds = torch.randint(0, SEED_BOUND, (self.workers,), generator=self._generator).tolist()
            self._order(model, n_steps, seeds)
        started = time.perf_counter()
        payloads = [self._receive(index, "rollout", None)[1] for index in range(self.workers)]
        self.wait_s += time.perf_counter() - started
        versions = {int(payload["version"]) for payload in payloads}
        if versions != {self.published}:
            raise RuntimeError(f"pipelined sampler: rollout of weight versions {sorted(versions)}, expected "
                               f"{self.published}: the policy lag would exceed one update")
        self.behaviour_version, self.lag = self.published, self._collects - self._published_at
        self._order(model, n_steps, [None] * self.workers)
        self._collects += 1
        return self._merge(payloads, n_steps)

    def _order(self, model: torch.nn.Module, n_steps: int, seeds: list[int | None]) -> None:
        """Publish ``model``'s weights as the next version and have every worker collect with them."""
        state = model.state_dict()
        with torch.no_grad():
            for key in self._mutable:
                self._shared[key].copy_(state[key])
        self.published += 1
        self._published_at = self._collects
        for connection, seed in zip(self._connections, seeds):
            connection.send(("collect", self.published, n_steps, seed))
        self._in_flight = True

    def _merge(self, payloads: list[dict[str, Any]], n_steps: int) -> CollectedSteps:
        """The workers' rollouts side by side: env ``i`` of the whole is worker by worker, in order."""
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

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [int(process.pid) for process in self._processes]

    def get_state(self) -> None:
        """Worker environments are not saved: a resumed run plays freshly seeded episodes."""
        return

    def reset(self, seed: Any = None) -> Any:
        raise PolyfuseError(
            "env.vectorization: pipelined feeds on-policy optimizers (ppo, a2c) whole rollouts; this optimizer "
            "steps the environments itself: use env.vectorization sync, async or native"
        )

    step = reset

    def close(self) -> None:
        """Stop the workers (an in-flight rollout is dropped); kill those that do not stop in time."""
        for connection in self._connections:
            try:
                connection.send(("close",))
            except (OSError, ValueError):
                pass
            connection.close()  # a worker blocked sending a rollout gets a broken pipe and exits
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(CLOSE_TIMEOUT_S)
        self._processes, self._connections = [], []

    # --- messages --------------------------------------------------------------------------------

    def _receive(self, index: int, expected: str, timeout: float | None) -> tuple[Any, ...]:
        """Worker ``index``'s next message, which must be ``expected``; a dead or failing worker is an error."""
        connection, process = self._connections[index], self._processes[index]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not connection.poll(POLL_S):
            if not process.is_alive():
                raise PolyfuseError(f"pipelined sampler: worker {index} died (exit code {process.exitcode}); "
                                    "see its output above")
            if deadline is not None and time.monotonic() > deadline:
                raise PolyfuseError(f"pipelined sampler: worker {index} did not answer within {timeout:.0f} s")
        try:
            message = connection.recv()
        except EOFError:
            raise PolyfuseError(f"pipelined sampler: worker {index} closed its pipe (exit code "
                                f"{process.exitcode})") from None
        if message[0] == "error":
            raise PolyfuseError(f"pipelined sampler: worker {index} failed:\n{message[1]}")
        if message[0] != expected:
            raise RuntimeError(f"pipelined sampler: worker {index} sent {message[0]!r}, expected {expected!r}")
        return message


def frozen_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the frozen encoders in ``model`` (their weights never change: shared once)."""
    from polyfuse.network import MultimodalNetwork

    prefixes = []
    for path, network in model.named_modules():
        if isinstance(network, MultimodalNetwork):
            prefixes += [f"{path}.encoders.{modality}." if path else f"encoders.{modality}."
                         for modality, encoder in network.encoders.items() if not encoder.trainable]
    return tuple(prefixes)
