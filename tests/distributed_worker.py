"""One rank of the data-parallel checks in test_distributed.py (started there by torchrun, 2 ranks over gloo).

``OUT``: gradient averaging and parameter broadcast on known tensors, then ppo, a2c and dqn each take a few
updates on the word bandit, every rank on its own seeded environments (a rank's share of a 4-env, batch-16
run); each rank writes what it saw to OUT. ``OUT --no-average`` is the control: the same updates without the
all-reduce, where the ranks' parameters must part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polyfuse.rl.base
import torch
from polyfuse.components import Kind
from polyfuse.registry import default_registry
from polyfuse.rl.testing import make_vector_env, pipeline_for
from polyfuse.training.api import Budget
from polyfuse.training.distributed import (
    average_gradients,
    broadcast_parameters,
    initialize,
    rank_seed,
    shutdown,
)

PARAMS = {
    "ppo": {"n_steps": 8, "n_epochs": 2, "batch_size": 16, "hidden_sizes": [16]},
    "a2c": {"n_steps": 8, "hidden_sizes": [16]},
    "dqn": {"batch_size": 16, "buffer_size": 256, "learning_starts": 16, "train_frequency": 2,
            "hidden_sizes": [16]},
}
TOTAL_ENVS = 4


def collectives(out: Path, rank: int) -> None:
    weight = torch.nn.Parameter(torch.full((3,), float(rank + 1)))
    weight.grad = torch.full((3,), float(rank + 1))
    unused = torch.nn.Parameter(torch.zeros(2))  # no gradient on this rank: counts as zeros
    if rank == 1:
        unused.grad = torch.ones(2)
    average_gradients([weight, unused])
    broadcast_parameters([weight])
    out.joinpath(f"collectives{rank}.json").write_text(json.dumps(
        {"grad": weight.grad.tolist(), "unused": unused.grad.tolist(), "weight": weight.detach().tolist()}
    ))


def optimizers(out: Path, rank: int, size: int) -> None:
    registry = default_registry()
    for name, params in PARAMS.items():
        local = {k: v // size if k in ("batch_size", "buffer_size") else v for k, v in params.items()}
        optimizer = registry.create(Kind.OPTIMIZER, name, local)
        envs = make_vector_env("bandit", TOTAL_ENVS // size, seed=rank_seed(0, rank))
        optimizer.set_budget(Budget(10_000, "env_steps"))
        optimizer.setup(pipeline_for(envs, seed=0))
        initial = _flat(optimizer)
        while optimizer.progress.gradient_steps < 6:
            optimizer.iterate()
        np.savez(out / f"{name}{rank}.npz", initial=initial, final=_flat(optimizer),
                 progress=np.array([optimizer.progress.env_steps, optimizer.progress.samples]))
        envs.close()


def _flat(optimizer: polyfuse.rl.base.Algorithm) -> np.ndarray:
    assert optimizer.adam is not None
    return torch.cat([p.detach().reshape(-1) for p in optimizer.adam.param_groups[0]["params"]]).numpy().copy()


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    group = initialize()
    if "--no-average" in sys.argv:
        polyfuse.rl.base.average_gradients = lambda parameters: None  # type: ignore[assignment]
    try:
        collectives(out, group.rank)
        optimizers(out, group.rank, group.size)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
