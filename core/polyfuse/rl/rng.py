"""Random generators' state in checkpoint-safe form: numpy Generators and torch Generators.

Checkpoints hold tensors, numpy arrays and JSON values; PCG64's 128-bit
integers do not fit JSON numbers, so they are kept as decimal strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def generator_state(generator: Any) -> Any:
    """A numpy Generator's state as a dict of JSON values, a torch Generator's as its byte tensor."""
    if not isinstance(generator, np.random.Generator):
        return generator.get_state()
    state = generator.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def set_generator_state(generator: Any, saved: Any) -> None:
    """Restore what :func:`generator_state` returned (a checkpoint may hand a torch state back as numpy)."""
    if not isinstance(generator, np.random.Generator):
        import torch

        array = np.asarray(saved.cpu() if isinstance(saved, torch.Tensor) else saved)
        generator.set_state(torch.as_tensor(array, dtype=torch.uint8))
        return
    if saved["bit_generator"] != generator.bit_generator.state["bit_generator"]:
        raise ValueError(
            f"the saved generator is a {saved['bit_generator']}, this one a "
            f"{generator.bit_generator.state['bit_generator']}"
        )
    generator.bit_generator.state = {
        "bit_generator": saved["bit_generator"],
        "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
        "has_uint32": int(saved["has_uint32"]),
        "uinteger": int(saved["uinteger"]),
    }
