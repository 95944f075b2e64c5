"""Pipelined sampling on one machine (``env.vectorization: pipelined``): runners in spawned worker processes.

Weights travel as torch shared-memory tensors (one per state-dict entry, sent
once when the workers build their networks); each publish copies the entries
training may change (everything but frozen encoders) into them. Rollouts come
back over one pipe per worker (:mod:`polyfuse.sampling.process_worker`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from polyfuse.errors import PolyfuseError
from polyfuse.sampling.process_worker import run_worker
from polyfuse.sampling.sampler import Sampler

START_TIMEOUT_S = 600.0
"""How long a worker may take to build its environments or its network (a sentence-transformer loads in seconds)."""
CLOSE_TIMEOUT_S = 5.0
POLL_S = 0.5


class PipelinedSampler(Sampler):
    """A :class:`~polyfuse.sampling.sampler.Sampler` whose runners are worker processes of this machine."""

    vectorization = "pipelined"

    def _start(self) -> None:
        self._shared: dict[str, torch.Tensor] = {}
        self._processes: list[Any] = []
        self._connections: list[Any] = []
        context = multiprocessing.get_context("spawn")
        for index, setup in enumerate(self._setups):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=run_worker, args=(child_end, os.getpid(), setup),
                                      name=f"polyfuse-sampler-{index}", daemon=True)
            process.start()
            child_end.close()
            self._processes.append(process)
            self._connections.append(parent_end)
        for index in range(self.workers):
            self._receive(index, "ready", START_TIMEOUT_S)

    def _build(self, spec: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
        self._shared = {key: value.detach().clone().share_memory_() for key, value in state.items()}
        for connection in self._connections:
            connection.send(("build", spec, self._shared))
        for index in range(self.workers):
            self._receive(index, "built", START_TIMEOUT_S)

    def _publish(self, state: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, value in state.items():
                self._shared[key].copy_(value)

    def _order_rollouts(self, version: int, n_steps: int, seeds: list[int | None]) -> None:
        for connection, seed in zip(self._connections, seeds):
            connection.send(("collect", version, n_steps, seed))

    def _rollouts(self) -> list[dict[str, Any]]:
        return [self._receive(index, "rollout", None)[1] for index in range(self.workers)]

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [int(process.pid) for process in self._processes]

    def close(self) -> None:
        """Stop the workers (an in-flight rollout is dropped); kill those that do not stop in time."""
        for connection in getattr(self, "_connections", []):
            try:
                connection.send(("close",))
            except (OSError, ValueError):
                pass
            connection.close()  # a worker blocked sending a rollout gets a broken pipe and exits
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for process in getattr(self, "_processes", []):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(CLOSE_TIMEOUT_S)
        self._processes, self._connections = [], []

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
