"""Seeds and random-number-generator state: same seed, same run; a resumed run continues the streams.

Training environments are seeded below :data:`EVAL_SEED_BASE` and
evaluation episodes at or above it, so held-out episodes never repeat
training ones.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from polyfuse.errors import PolyfuseError

EVAL_SEED_BASE = 2**31
MAX_SEED = 2**30


def check_seed(seed: int) -> None:
    if not 0 <= seed < MAX_SEED:
        raise PolyfuseError(f"trainer.seed must be in [0, {MAX_SEED}), got {seed}")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(seed: int, *salt: int) -> int:
    """A seed for another stream of the run (a resumed run's envs, warm-start data), below the eval seeds."""
    return int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0]) % MAX_SEED


def rng_state() -> dict[str, Any]:
    """The global generators' state, in the types checkpoints store (tuples, arrays, tensors)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
