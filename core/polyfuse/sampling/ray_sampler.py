"""Env runners as Ray actors (``env.vectorization: ray``): the pipelined schedule on one machine or a cluster.

Each of ``env.workers`` actors is a :class:`~polyfuse.sampling.worker.RolloutWorker`
(its share of the environments, seeded as with ``pipelined``, and a copy of the
actor-critic). Weights travel through Ray's object store: the whole state once
when the runners build their networks, then, per rollout, the entries training
changes, put once and read by every runner. Rollouts (numpy arrays, text as
object arrays, episodes, segments) come back as the actors' return values.

A runner that dies (its process or node lost, with the rollout it had stored
there; ``ray.kill``) is replaced by a new actor with the same environments and
seeds, built with the same weights, and the lost rollout is collected again
with the version it was ordered with, so the one-update lag holds; stderr says
so and ``optimizer/runners_replaced`` in metrics.jsonl counts it. A runner
whose code fails (an exception in the environment or the network) stops the run
with the runner's traceback.

``env.ray.address`` null starts a local Ray instance sized for the runners
(one CPU each, a small object store, no dashboard, files under the system
temp folder) and shuts it down with the sampler; an address joins a running
cluster, left running. The ranks of a data-parallel run (``--nproc``) each run
a sampler with their share of the runners, in one instance
(:mod:`polyfuse.sampling.ray_group`). Ray is imported here only, when the
config asks for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import torch

from polyfuse.config import RayConfig
from polyfuse.errors import PolyfuseError
from polyfuse.sampling.sampler import Sampler
from polyfuse.sampling.worker import RolloutWorker
from polyfuse.training.distributed import sum_over_ranks

RAY_MISSING = ("Ray is not installed: pip install 'polyfuse[ray]' (or use env.vectorization: pipelined to sample "
               "in processes of this machine)")
CONNECT_TIMEOUT_S = 10.0
"""How long the head node's port may take to accept a connection (ray.init retries for minutes when none does)."""
MAX_REPLACEMENTS = 3
"""Replacements of one runner for one rollout before the run gives up (a runner that cannot live)."""
MAX_TEMP_DIR_CHARS = 107 - len("/session_2026-12-02_06-10-29_229116_1234567/sockets/plasma_store")
"""The longest folder for a local instance's files: Ray's Unix sockets lie below it, and their paths cannot
exceed 107 bytes (macOS's temp folder, /var/folders/.../T/, is too long)."""


def ray_installed() -> bool:
    """Whether Ray can be imported (without importing it: seconds)."""
    return importlib.util.find_spec("ray") is not None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PolyfuseError(f"env.vectorization: ray: {RAY_MISSING}") from None
    return ray


def local_temp_dir() -> str:
    """Ray's session files and logs for a local instance: one folder per user under the system temp folder,
    or under /tmp where that is too long for Ray's socket paths."""
    folder = f"polyfuse-ray-{os.getuid()}"
    temp = tempfile.gettempdir()
    return os.path.join(temp if len(os.path.join(temp, folder)) <= MAX_TEMP_DIR_CHARS else "/tmp", folder)


def start_ray(ray: Any, config: RayConfig, num_cpus: int) -> None:
    """``ray.init`` for a run: a local instance with ``num_cpus`` CPUs, or the cluster at ``config.address``."""
    try:
        if config.address is None:
            init_ray(ray, address="local", num_cpus=num_cpus, object_store_memory=config.object_store_mb * 2**20,
                     include_dashboard=False, _temp_dir=local_temp_dir())
        else:
            check_reachable(config.address)
            init_ray(ray, address=config.address)
    except ConnectionError as error:
        raise PolyfuseError(f"env.ray.address: no Ray cluster at {config.address!r} ({error}); start one "
                            "(ray start --head) or set env.ray.address: null for a local instance") from None


def init_ray(ray: Any, **options: Any) -> None:
    """``ray.init(**options)`` at warning level, the runners' output on stderr.

    Ray replaces the SIGTERM handler of the process that calls it; the trainer's (stop after this
    iteration and save a checkpoint) is put back.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        ray.init(logging_level=logging.WARNING, log_to_driver=True, **options)
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGTERM, handler)


def check_reachable(address: str) -> None:
    """Refuse at once a ``HOST:PORT`` where nothing listens: ``ray.init`` would retry for minutes, then fail."""
    if address == "auto":  # Ray looks for the cluster `ray start` made on this machine and says if there is none
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise PolyfuseError(f"env.ray.address: nothing answers at {address} ({error}); start the cluster's head "
                            f"node there (ray start --head --port {port}), correct the address, or set "
                            "env.ray.address: null for a local instance") from None


class RayRunner:
    """The actor: a :class:`RolloutWorker` whose methods Ray calls (in the order they were submitted)."""

    def __init__(self, setup: Mapping[str, Any]) -> None:
        self.worker = RolloutWorker(setup)

    def pid(self) -> int:
        return os.getpid()

    def build(self, spec: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        self.worker.build(spec, state)

    def collect(self, version: int, n_steps: int, seed: int | None, weights: Mapping[str, Any]) -> dict[str, Any]:
        return self.worker.collect(version, n_steps, seed, weights)


class RaySampler(Sampler):
    """A :class:`~polyfuse.sampling.sampler.Sampler` whose runners are Ray actors; dead runners are replaced."""

    vectorization = "ray"

    def _start(self) -> None:
        self._owns_ray = False  # whether close() disconnects (and shuts down the local instance this started)
        self._shared = False  # whether the ranks of a data-parallel run share a local instance rank 0 started
        self._actors: list[Any] = []
        self._pending: list[Any] = []
        self.replaced = 0  # runners replaced since the start
        config = self.config.env.ray or RayConfig()
        if self.ranks.parallel:  # one instance for every rank's runners
            from polyfuse.sampling.ray_group import connect

            self._ray = ray = connect(config, self.workers, self.ranks)
            self._owns_ray, self._shared = True, config.address is None
        else:
            self._ray = ray = import_ray()
            if not ray.is_initialized():  # else a Ray instance this process already uses (a notebook, tests)
                start_ray(ray, config, num_cpus=self.workers)
                self._owns_ray = True
        self._runner = ray.remote(num_cpus=1, max_restarts=0)(RayRunner)
        self._actors = [self._runner.remote(setup) for setup in self._setups]
        self._get_all([actor.pid.remote() for actor in self._actors], "start")

    def _build(self, spec: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        self._spec = spec
        self._state = self._ray.put({key: value.detach().cpu() for key, value in state.items()})
        self._get_all([actor.build.remote(spec, self._state) for actor in self._actors], "build its network")

    def _publish(self, state: Mapping[str, torch.Tensor]) -> None:
        self._weights = self._ray.put({key: value.detach().cpu() for key, value in state.items()})

    def _order_rollouts(self, version: int, n_steps: int, seeds: list[int | None]) -> None:
        self._n_steps = n_steps
        self._pending = [actor.collect.remote(version, n_steps, seed, self._weights)
                         for actor, seed in zip(self._actors, seeds)]

    def _rollouts(self) -> list[dict[str, Any]]:
        return [self._rollout(index) for index in range(self.workers)]

    def _rollout(self, index: int) -> dict[str, Any]:
        """Runner ``index``'s ordered rollout; if the runner died, a replacement's, collected again."""
        lost: Exception | None = None
        for _ in range(MAX_REPLACEMENTS + 1):
            try:
                if lost is not None:
                    self._replace(index, lost)
                return self._get(index, self._pending[index])
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.ObjectLostError) as error:
                lost = error  # the runner died, or its node with the rollout it had stored there
        raise PolyfuseError(f"ray sampler: runner {index} died {MAX_REPLACEMENTS + 1} times in a row collecting "
                            f"rollout {self.published}; the last time: {first_line(lost)}")

    def _replace(self, index: int, error: Exception) -> None:
        """A new actor for runner ``index`` (same environments and seeds, same weights) re-collecting its rollout."""
        ray, setup = self._ray, self._setups[index]
        rank = f" (rank {self.ranks.rank})" if self.ranks.parallel else ""
        print(f"ray sampler{rank}: runner {index} died ({first_line(error)}); replacing it with a new actor (its "
              f"{setup['num_envs']} environments seeded from {setup['seed']} again) and collecting rollout "
              f"{self.published} again", file=sys.stderr, flush=True)
        ray.kill(self._actors[index], no_restart=True)  # an actor that is unreachable rather than dead
        actor = self._runner.remote(setup)
        self._actors[index] = actor
        self.replaced += 1
        self._get(index, actor.build.remote(self._spec, self._state))
        self._pending[index] = actor.collect.remote(self.published, self._n_steps, self._draw_seeds(1)[0],
                                                    self._weights)

    def _get(self, index: int, reference: Any) -> Any:
        """``ray.get``; a runner's own failure (its traceback) is the run's error, its death is left to the caller."""
        try:
            return self._ray.get(reference)
        except self._ray.exceptions.RayTaskError as error:
            raise PolyfuseError(f"ray sampler: runner {index} failed:\n{error}") from None

    def _get_all(self, references: list[Any], what: str) -> list[Any]:
        """Every runner's answer; a runner that dies before its first rollout cannot be replaced (the same
        config would fail again): the run's error."""
        try:
            return [self._get(index, reference) for index, reference in enumerate(references)]
        except self._ray.exceptions.RayActorError as error:
            raise PolyfuseError(f"ray sampler: a runner died before it could {what}:\n{error}") from None

    def metrics(self) -> dict[str, float]:
        """The schedule's (policy lag, learner wait) and the runners replaced so far (on all ranks)."""
        return {**super().metrics(), "runners_replaced": sum_over_ranks(self.replaced)}

    @property
    def actors(self) -> list[Any]:
        """The runners' actor handles, runner by runner."""
        return list(self._actors)

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        self.close(orderly=exc_type is None)

    def close(self, orderly: bool = False) -> None:
        """Kill the runners (an in-flight rollout is dropped); disconnect from Ray, shutting down the local
        instance this started. ``orderly``: the run ended well on this rank, so every rank closes (a rank
        sharing rank 0's instance waits for the others: :func:`polyfuse.sampling.ray_group.leave`)."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors, self._pending = [], []
        if self._owns_ray:
            self._owns_ray = False
            if orderly and self._shared:
                from polyfuse.sampling.ray_group import leave

                leave(ray, self.ranks)
            else:
                ray.shutdown()


def first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
