"""An env runner: its share of the environments and a copy of the actor-critic, whatever carries its messages.

Both samplers drive it the same way: the pipelined sampler's worker processes
(:mod:`polyfuse.sampling.process_worker`, over a pipe, weights in shared
memory) and the Ray sampler's actors (:mod:`polyfuse.sampling.ray_sampler`,
weights through Ray's object store). It is built from JSON-like values
(``setup``, ``spec``) and hands back numpy arrays and built-in values only,
so any transport can carry a rollout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


class RolloutWorker:
    """Steps ``setup["num_envs"]`` environments with a copy of the learner's actor-critic."""

    def __init__(self, setup: Mapping[str, Any]) -> None:
        import torch

        torch.set_num_threads(int(setup["num_threads"]))
        import polyfuse.envs  # noqa: F401 - registers polyfuse's ids in a fresh process
        from polyfuse.envs import make_vector_env

        self.vector_env = make_vector_env(setup["env_id"], setup["env_kwargs"], num_envs=int(setup["num_envs"]),
                                          vectorization=setup["vectorization"], seed=int(setup["seed"]))
        self.envs: Any = None
        self.generator = torch.Generator()
        self.model: Any = None
        self.mutable: list[str] = []

    def build(self, spec: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """Build the actor-critic from the pipeline config in ``spec`` (the installed plugins) with weights ``state``."""
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
        self.model.load_state_dict(state)
        self.mutable = list(spec["mutable"])
        self.target = self.model.state_dict()

    def collect(self, version: int, n_steps: int, seed: int | None, weights: Mapping[str, Any]) -> dict[str, Any]:
        """``n_steps`` steps with ``weights`` (the learner's, published as ``version``; at least the entries
        training changes); ``seed`` (first rollout only) seeds the action sampler."""
        import numpy as np
        import torch

        from polyfuse.observations import as_text_array, concatenate, copy_batch, is_text, stack
        from polyfuse.rl import distributions

        if self.model is None:
            raise RuntimeError("collect before build")
        if seed is not None:
            self.generator.manual_seed(int(seed))
        for key in self.mutable:
            self.target[key].copy_(weights[key])
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
