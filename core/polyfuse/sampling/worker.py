"""One pipelined-sampling worker process: its share of the environments and a copy of the actor-critic.

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
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

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


def run_worker(connection: Connection, parent_pid: int, setup: Mapping[str, Any]) -> None:
    """The worker's main function (a spawned process); ``setup`` is JSON-like: env config, seeds, env slice."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        return
    try:
        worker = _Worker(setup)
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


def _serve(connection: Connection, parent_pid: int, worker: _Worker) -> None:
    """Answer the learner's messages until it says close, or its process is gone."""
    while True:
        while not connection.poll(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                return
        message = connection.recv()
        if message[0] == "close":
            return
        try:
            connection.send(worker.handle(message))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception:  # noqa: BLE001 - reported to the learner, which raises it
            connection.send(("error", traceback.format_exc()))


class _Worker:
    def __init__(self, setup: Mapping[str, Any]) -> None:
        import torch

        torch.set_num_threads(int(setup["num_threads"]))
        import polyfuse.envs  # noqa: F401 - registers polyfuse's ids in a spawned process
        from polyfuse.envs import make_vector_env

        self.vector_env = make_vector_env(setup["env_id"], setup["env_kwargs"], num_envs=int(setup["num_envs"]),
                                          vectorization=setup["vectorization"], seed=int(setup["seed"]))
        self.envs: Any = None
        self.generator = torch.Generator()
        self.model: Any = None
        self.mutable: list[str] = []

    def handle(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        if message[0] == "build":
            self._build(message[1], message[2])
            return ("built",)
        if message[0] == "collect":
            _, version, n_steps, seed = message
            return ("rollout", self._collect(int(version), int(n_steps), seed))
        raise ValueError(f"unknown message {message[0]!r}")

    def _build(self, spec: Mapping[str, Any], shared: dict[str, Any]) -> None:
        from polyfuse.config import PipelineConfig
        from polyfuse.network import NetworkFactory
        from polyfuse.rl.distributions import ActionLayout
        from polyfuse.rl.heads import ActorCritic
        from polyfuse.training.vector_env import TrackedVectorEnv

        self.envs = TrackedVectorEnv(self.vector_env, spec["segment_length"], replayable=False)
        self.observations, _ = self.envs.reset()
        factory = NetworkFactory(PipelineConfig.model_validate(spec["pipeline"]),
                                 self.envs.single_observation_space)
        self.layout = ActionLayout.of(self.envs.single_action_space, spec["optimizer"])
        self.model = ActorCritic(factory, self.layout.num_logits, **spec["actor_critic"])
        self.model.eval()
        self.model.requires_grad_(False)
        self.model.load_state_dict(shared)
        self.shared = shared
        self.mutable = list(spec["mutable"])
        self.target = self.model.state_dict()

    def _collect(self, version: int, n_steps: int, seed: int | None) -> dict[str, Any]:
        """``n_steps`` steps with the weights published as ``version``; arrays and built-in values only."""
        import numpy as np
        import torch

        from polyfuse.observations import as_text_array, concatenate, copy_batch, is_text, stack
        from polyfuse.rl import distributions

        if self.model is None:
            raise RuntimeError("collect before build")
        if seed is not None:
            self.generator.manual_seed(int(seed))
        for key in self.mutable:
            self.target[key].copy_(self.shared[key])
        envs, nvec, model = self.envs, self.layout.nvec, self.model
        shape = (n_steps, envs.num_envs)
        actions = torch.zeros((*shape, len(nvec)), dtype=torch.long)
        log_probs, values, final_values = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
        env_rewards = np.zeros(shape, dtype=np.float32)
        terminated, truncated = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        batches, env_actions = [], []
        env_time_before, started = envs.env_time_s, time.perf_counter()
        observations = self.observations
        with torch.no_grad():
            for t in range(n_steps):
                logits, value = model(observations)
                action = distributions.sample(logits, nvec, self.generator)
                batches.append(copy_batch(observations))
                actions[t], values[t] = action, value
                log_probs[t] = distributions.log_prob(logits, action, nvec)
                env_actions.append(self.layout.to_env(action))
                observations, env_rewards[t], terminated[t], truncated[t], infos = envs.step(env_actions[-1])
                cut = np.flatnonzero(truncated[t] & ~terminated[t])
                if cut.size:
                    final_values[t, torch.as_tensor(cut)] = model.value(stack([infos["final_obs"][i] for i in cut]))
            last_values = model.value(observations)
        self.observations = observations
        columns = {key: as_text_array(value) if is_text(value) else np.asarray(value)
                   for key, value in concatenate(batches).items()}
        return {
            "version": version,
            "observations": columns,
            "actions": actions.numpy(),
            "log_probs": log_probs.numpy(),
            "values": values.numpy(),
            "final_values": final_values.numpy(),
            "last_values": last_values.numpy(),
            "env_rewards": env_rewards,
            "terminated": terminated,
            "truncated": truncated,
            "env_actions": np.stack(env_actions),
            "episodes": [(e.episode_return, e.length, e.success) for e in envs.pop_episodes()],
            "segments": envs.pop_segments(),
            "env_time_s": envs.env_time_s - env_time_before,
            "busy_s": time.perf_counter() - started,
        }

    def close(self) -> None:
        self.vector_env.close()
