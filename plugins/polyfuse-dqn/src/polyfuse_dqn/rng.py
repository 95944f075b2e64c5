"""numpy Generator state in checkpoint-safe form (PCG64's 128-bit integers as decimal strings)."""

from __future__ import annotations

from typing import Any

import numpy as np


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    state = generator.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def set_generator_state(generator: np.random.Generator, saved: dict[str, Any]) -> None:
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
