"""Data-parallel training over ``torch.distributed`` (``torchrun``): each rank a share of the run.

The rule: a config describes the whole run, whatever the number of processes.
With N ranks, each rank steps ``env.num_envs / N`` environments (its own,
seeded from the run seed and its rank; with ``env.vectorization: ray``, on
``env.workers / N`` env runners of a Ray instance the ranks share:
:mod:`polyfuse.sampling.ray_group`) and takes ``batch_size / N`` (and
``buffer_size / N``) of the optimizer's params (:data:`SPLIT_PARAMS`), so a
gradient step averages the same global batch a single process would take;
gradients are averaged over the ranks before each optimizer step
(:func:`average_gradients`, called by :meth:`polyfuse.rl.base.Algorithm._descend`),
and the progress counters (env steps, samples) count all ranks. Rank 0 alone
evaluates and writes metrics, plots, summary and checkpoints.

Why an explicit all-reduce, not ``DistributedDataParallel``: DDP hooks a
module's ``forward``, but polyfuse's optimizers reach their networks through
several entry points (``model.value``, ``model.logits``, a DQN's online network
called twice per loss, a frozen reference), some of whose parameters take no
gradient in a given loss; one all-reduce of the flattened gradients in the
core's gradient step serves every optimizer plugin (ppo, a2c, dqn) with no
code of its own and no wrapper in its state dicts. The cost: no overlap of
communication with the backward pass, which on CPUs with these small networks
is a fraction of a millisecond per step.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyfuse.errors import PolyfuseError

if TYPE_CHECKING:
    import torch

    from polyfuse.config import PipelineConfig
    from polyfuse.training.api import Progress

SPLIT_PARAMS = ("batch_size", "buffer_size")
"""Optimizer params that are totals over the ranks: each rank takes an equal share."""
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (Linux)."""
BACKEND = "cpu:gloo,cuda:nccl"
"""gloo for tensors in CPU memory, NCCL for tensors on GPUs (torch picks by each tensor's device)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``size`` (0 of 1 without a process group)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, writes results and checkpoints, and prints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


_alone = False


def ranks() -> Ranks:
    """The process group's rank and size, or a single process's (0, 1) (also inside :func:`alone`)."""
    import torch.distributed as dist

    if not _alone and dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


@contextmanager
def alone() -> Iterator[None]:
    """Within: this process builds what it builds as a single process (no collectives): rank 0 loading a saved
    policy to judge it (the promotion gate) while the other ranks wait at the run's final barrier."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def launched_by_torchrun() -> bool:
    """Whether torchrun (or ``polyfuse run --nproc``) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialize() -> Ranks:
    """Join the process group torchrun's environment variables describe (MASTER_ADDR, RANK, WORLD_SIZE)."""
    import torch.distributed as dist

    if not dist.is_available():
        raise PolyfuseError("this torch build has no torch.distributed; install a build that has it "
                            "(the PyPI wheels do) to train with several processes")
    _die_with_launcher()
    backend = BACKEND if _cuda_available() else "gloo"
    dist.init_process_group(backend=backend)
    return ranks()


def _die_with_launcher() -> None:
    """Have the kernel kill this rank when its launcher dies (``kill -9`` of torchrun or ``polyfuse run --nproc``).

    torch's launcher starts each rank in a session of its own, so killing the
    launcher's process group leaves the ranks running on, holding the run's
    folder; a rank without its launcher has no one to report to anyway.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the request: follow it now
        os.kill(os.getpid(), signal.SIGKILL)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --- the rule: a config is the whole run ----------------------------------------------------------------


def check_distributable(config: PipelineConfig, size: int, learns_from: str | None) -> None:
    """Refuse, naming why, a config that cannot be split over ``size`` ranks."""
    if config.env is None:
        raise PolyfuseError(f"--nproc {size}: the config has no env, and data-parallel runs split environments "
                            "over the processes; add env: {id: ...}, or run in one process (no --nproc)")
    if learns_from == "dataset":
        raise PolyfuseError(
            f"--nproc {size}: optimizer {config.optimizer.name!r} learns from a dataset, and data-parallel runs "
            "split environments over the processes (each rank steps its own); run it in one process (no --nproc)"
        )
    if config.env.vectorization == "pipelined":
        raise PolyfuseError(
            f"--nproc {size}: env.vectorization: pipelined and --nproc each want the machine's cores and do not "
            "run together; use one of them (pipelined sampling when the environments dominate, --nproc when the "
            "update does)"
        )
    if config.env.num_envs % size:
        raise PolyfuseError(
            f"--nproc {size}: env.num_envs ({config.env.num_envs}) is the total over the processes and must divide "
            f"by {size}, so that every rank steps as many environments; set env.num_envs to a multiple of {size}"
        )
    workers = config.env.workers
    if config.env.vectorization == "ray" and workers is not None and workers % size:
        raise PolyfuseError(
            f"--nproc {size}: env.workers ({workers}) is the total of Ray env runners over the processes and must "
            f"divide by {size}, so that every rank runs as many; set env.workers to a multiple of {size}"
        )
    for name in SPLIT_PARAMS:
        value = config.optimizer.params.get(name)
        if isinstance(value, int) and value % size:
            raise PolyfuseError(
                f"--nproc {size}: optimizer.params.{name} ({value}) is the total over the processes and must "
                f"divide by {size} (each rank takes an equal share); set it to a multiple of {size}"
            )


def check_rank_components(optimizer: Any, reward: Any, size: int, name: str) -> None:
    """Refuse, naming why, an optimizer or reward source that cannot run as one of ``size`` ranks."""
    from polyfuse.rl.base import Algorithm

    if not isinstance(optimizer, Algorithm):
        raise PolyfuseError(
            f"--nproc {size}: optimizer {name!r} does not derive from polyfuse.rl.base.Algorithm, whose gradient step averages the gradients over the "
            "processes; run it in one process (no --nproc), or base it on Algorithm"
        )
    if not reward.stationary:
        raise PolyfuseError(
            f"--nproc {size}: the reward source {type(reward).__name__} learns during the run, and each process "
            "would train its own copy on its own feedback; run it in one process (no --nproc), or use a "
            "stationary reward (reward: env)"
        )


def rank_share(config: PipelineConfig, size: int) -> PipelineConfig:
    """The config one rank builds with: its share of the environments, of the Ray env runners (``env.workers``)
    and of :data:`SPLIT_PARAMS`."""
    if size == 1:
        return config
    assert config.env is not None
    params = {key: value // size if key in SPLIT_PARAMS and isinstance(value, int) else value
              for key, value in config.optimizer.params.items()}
    env: dict[str, Any] = {"num_envs": config.env.num_envs // size}
    if config.env.workers is not None:
        env["workers"] = config.env.workers // size
    return config.model_copy(update={
        "env": config.env.model_copy(update=env),
        "optimizer": config.optimizer.model_copy(update={"params": params}),
    })


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (a 1-process run is unchanged); others derive their own from it."""
    from polyfuse.training.seeding import derive_seed

    return seed if rank == 0 else derive_seed(seed, 4, rank)


# --- collectives ------------------------------------------------------------------------------------------


def average_gradients(parameters: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one all-reduce; no-op in one process).

    A parameter without a gradient on this rank counts as a zero gradient, so
    every rank reduces the same flat vector whatever its loss touched.
    """
    group = ranks()
    if not group.parallel or not parameters:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= group.size
    offset = 0
    for parameter in parameters:  # each gradient becomes a view of the reduced buffer: no copy back
        count = parameter.numel()
        parameter.grad = flat[offset:offset + count].view_as(parameter)
        offset += count


def broadcast_parameters(parameters: Iterable[torch.Tensor]) -> None:
    """Make every rank's ``parameters`` rank 0's (in place)."""
    group = ranks()
    if not group.parallel:
        return
    import torch
    import torch.distributed as dist

    tensors = list(parameters)
    if not tensors:
        return
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.broadcast(flat, src=0)
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()


def mean_over_ranks(value: float) -> float:
    """``value`` averaged over the ranks: for decisions every rank must take alike (PPO's target-KL stop)."""
    return sum_over_ranks(value) / ranks().size


def sum_over_ranks(value: float) -> float:
    """``value`` summed over the ranks (one all-reduce; ``value`` itself in one process)."""
    if not ranks().parallel:
        return float(value)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


@dataclass
class Exchange:
    """All ranks' episodes of an iteration (in rank order), and the signal that stops them, if any rank had one."""

    episodes: list[Any]
    stop: int | None


def exchange(episodes: list[Any], stop: int | None, progress: Progress, optimizer: str) -> Exchange:
    """What the ranks tell each other after each iteration: their finished episodes, a stop request, their progress.

    Every rank must have made the same progress (counters are global: each
    rank counts the whole run's steps); a rank that did not means the
    optimizer's ranks took different paths, and the run stops with an error
    rather than hang in a collective later.
    """
    group = ranks()
    if not group.parallel:
        return Exchange(episodes, stop)
    import torch.distributed as dist

    gathered: list[Any] = [None] * group.size
    dist.all_gather_object(gathered, (episodes, stop, progress))
    progresses = {rank_progress for _, _, rank_progress in gathered}
    if len(progresses) > 1:
        raise PolyfuseError(
            f"the ranks of optimizer {optimizer!r} diverged: their progress differs after the same iteration "
            f"({', '.join(str(p.as_dict()) for p in progresses)}); every rank must take the same steps (a "
            "decision taken on one rank's data must be agreed with polyfuse.training.distributed.mean_over_ranks)"
        )
    stops = [rank_stop for _, rank_stop, _ in gathered if rank_stop is not None]
    return Exchange([e for rank_episodes, _, _ in gathered for e in rank_episodes], stops[0] if stops else None)


PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
"""What gloo says when another rank has gone: that rank reports its own error."""


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank stopped (its error says why)."""
    return isinstance(exc, RuntimeError) and any(words in str(exc) for words in PEER_LOST)


def barrier() -> None:
    if ranks().parallel:
        import torch.distributed as dist

        dist.barrier()
