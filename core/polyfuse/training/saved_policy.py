"""A trained run's policy, loaded from its checkpoint to act (``polyfuse eval``), without pickle.

The optimizer is rebuilt from the config saved in the checkpoint and set up
as the trainer sets it up, over the run's own environment (for its spaces)
and the environment's reward: a learned reward model (RLHF) trains the policy
and is not needed to run it, so a judge or annotation server is never started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyfuse.components import Kind
from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.envs import make_vector_env
from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry
from polyfuse.training.api import Budget, Pipeline, RLOptimizer
from polyfuse.training.checkpoint import (
    STATE_FILE,
    TENSORS_FILE,
    DamagedCheckpoint,
    load_checkpoint,
    load_latest_checkpoint,
    read_checkpoint_tree,
)
from polyfuse.training.distributed import alone
from polyfuse.training.promotion import promoted_checkpoint


@dataclass
class SavedPolicy:
    """The optimizer (its ``act``), the run's config, the training environment's spaces, and the step saved."""

    location: Path
    config: PipelineConfig
    optimizer: RLOptimizer
    observation_space: Any
    action_space: Any
    step: int
    envs: Any

    def close(self) -> None:
        self.envs.close()


def is_checkpoint_folder(path: Path) -> bool:
    """Whether ``path`` is one checkpoint (not a run's output_dir holding them)."""
    return (path / STATE_FILE).is_file() and (path / TENSORS_FILE).is_file()


def checkpoint_folder(path: Path) -> Path:
    """``path`` itself when it is a checkpoint folder, else ``path`` as a run's output_dir: the checkpoint
    promoted there (:mod:`polyfuse.training.promotion`), or else its newest intact one."""
    if is_checkpoint_folder(path):
        return path
    if not path.is_dir():
        raise PolyfuseError(f"{path} does not exist; give a run's output_dir (e.g. runs/latest) or a checkpoint "
                            "folder in it")
    promoted = promoted_checkpoint(path)
    if promoted is not None:
        return promoted
    found = load_latest_checkpoint(path, required=("config", "optimizer"))
    if found is None:
        raise PolyfuseError(f"{path} holds no checkpoint; give the output_dir of a run that `polyfuse run` trained "
                            "(it writes checkpoint/ there)")
    return found[0]


def saved_config(location: Path, registry: Registry, data: Any = None) -> PipelineConfig:
    """The config a checkpoint was trained with (``data``, when already read), validated; it must have an env."""
    data = read_checkpoint_tree(location)["config"] if data is None else data
    config = validate_pipeline(data, registry, source=f"config saved in {location}")
    if config.env is None:
        raise PolyfuseError(f"{location} is a run without an environment (it learnt from a dataset alone), so the "
                            "observations its policy reads are unknown; evaluate runs that have env: {id: ...}")
    return config


def load_saved_policy(path: Path, registry: Registry) -> SavedPolicy:
    """The policy saved at ``path`` (a run's output_dir or a checkpoint folder), ready to ``act``."""
    location = checkpoint_folder(Path(path))
    try:
        state = load_checkpoint(location, required=("config", "optimizer"))
    except DamagedCheckpoint as exc:
        raise PolyfuseError(str(exc)) from None
    config = saved_config(location, registry, state["config"])
    from polyfuse.network import NetworkFactory
    from polyfuse.rewards import EnvReward
    from polyfuse.training.vector_env import TrackedVectorEnv

    env = config.env
    vectorization = "native" if env.vectorization == "native" else "sync"  # no worker processes just to load
    vector_env = make_vector_env(env.id, env.kwargs, num_envs=env.num_envs, vectorization=vectorization,
                                 seed=config.trainer.seed)
    try:
        observation_space, action_space = vector_env.single_observation_space, vector_env.single_action_space
        dataset = None
        if config.dataset is not None:
            dataset = registry.create(Kind.DATASET, config.dataset.name, config.dataset.params,
                                      observation_space=observation_space, action_space=action_space)
        optimizer = registry.create(Kind.OPTIMIZER, config.optimizer.name, config.optimizer.params)
        optimizer.set_budget(Budget(config.trainer.total_steps, config.trainer.budget_unit))
        with alone():  # this process's own policy, even on rank 0 of a run (its gate): no collective in setup
            optimizer.setup(Pipeline(NetworkFactory(config, observation_space, registry), config.trainer.seed,
                                     observation_space, action_space, TrackedVectorEnv(vector_env, None),
                                     EnvReward(), dataset))
        try:
            optimizer.load_state_dict(state["optimizer"])
        except PolyfuseError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise PolyfuseError(
                f"cannot load the policy saved in {location}: {type(exc).__name__}: {str(exc)[:300]}; the checkpoint "
                f"does not fit the installed {config.optimizer.name!r} optimizer (written by another version?)"
            ) from None
    except BaseException:
        vector_env.close()
        raise
    step = int(state.get("trainer", {}).get("steps", 0))
    return SavedPolicy(location, config, optimizer, observation_space, action_space, step, vector_env)
