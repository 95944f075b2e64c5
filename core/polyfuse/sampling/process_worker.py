"""One pipelined-sampling worker process: a :class:`~polyfuse.sampling.worker.RolloutWorker` behind a pipe.

The learner's process starts it (:class:`polyfuse.sampling.PipelinedSampler`)
and talks to it over one pipe:

- ``("build", spec, shared_state)``: build the actor-critic from the pipeline
  config in ``spec`` (the installed plugins, as ``polyfuse run`` finds them)
  and load every entry of ``shared_state`` (torch shared-memory tensors the
  learner writes its weights into); answers ``("built",)``.
- ``("collect", version, n_steps, seed)``: reload the weights the learner
  published as ``version`` (those entries it may change), step ``n_steps``
  with them and answer ``("rollout", payload)``; ``seed`` (first rollout
  only) seeds the action sampler.
- ``("close",)``: exit.

Any failure is answered ``("error", traceback)``. The worker ignores Ctrl-C
(the learner stops the run and checkpoints) and dies with its parent: the
kernel sends it SIGKILL when the parent dies (Linux ``PR_SET_PDEATHSIG``),
and elsewhere it notices within a second that its parent is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from polyfuse.sampling.worker import RolloutWorker

PARENT_CHECK_S = 1.0
"""How often an idle worker checks that its parent is alive (where the kernel cannot tell it)."""
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # no glibc (musl): the parent-alive check still applies
        pass


def progress_bars_with_a_thread_lock() -> None:
    """Give tqdm a thread lock before anything (a model loader) draws a bar.

    Its default lock is a multiprocessing semaphore, registered with the learner's resource
    tracker; this process ends with ``os._exit``, which never unregisters it, so every run ended
    with a "leaked semaphore" warning. Nothing here shares a bar with another process.
    """
    import threading

    import tqdm

    tqdm.tqdm.set_lock(threading.RLock())


def run_worker(connection: Connection, parent_pid: int, setup: Mapping[str, Any]) -> None:
    """The worker's main function (a spawned process); ``setup`` is JSON-like: env config, seeds, env slice."""
    die_with_parent()
    progress_bars_with_a_thread_lock()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        return
    try:
        worker = RolloutWorker(setup)
        connection.send(("ready",))
    except BaseException:  # noqa: BLE001 - whatever stops the set-up is the learner's error message
        connection.send(("error", traceback.format_exc()))
        return
    code = 0
    try:
        _serve(connection, parent_pid, worker)
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the learner went away
        pass
    except BaseException:  # noqa: BLE001 - the pipe itself failed: say why on stderr
        traceback.print_exc()
        code = 1
    worker.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing left to clean up: skip the interpreter's teardown (seconds with torch loaded)


def _serve(connection: Connection, parent_pid: int, worker: RolloutWorker) -> None:
    """Answer the learner's messages until it says close, or its process is gone."""
    shared: Mapping[str, Any] = {}  # the learner's weights, in shared memory: it publishes each version into them
    while True:
        while not connection.poll(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                return
        message = connection.recv()
        if message[0] == "close":
            return
        try:
            if message[0] == "build":
                shared = message[2]
                worker.build(message[1], shared)
                connection.send(("built",))
            elif message[0] == "collect":
                _, version, n_steps, seed = message
                connection.send(("rollout", worker.collect(int(version), int(n_steps), seed, shared)))
            else:
                raise ValueError(f"unknown message {message[0]!r}")
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception:  # noqa: BLE001 - reported to the learner, which raises it
            connection.send(("error", traceback.format_exc()))
