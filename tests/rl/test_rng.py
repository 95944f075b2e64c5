"""Generator state survives a checkpoint: numpy's PCG64 (128-bit integers) and torch's byte state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from polyfuse.rl.rng import generator_state, set_generator_state
from polyfuse.training.checkpoint import load_checkpoint, save_checkpoint


def test_generators_continue_where_they_were_saved(tmp_path) -> None:
    numpy_generator, torch_generator = np.random.default_rng(5), torch.Generator().manual_seed(5)
    numpy_generator.random(3), torch.rand(3, generator=torch_generator)
    save_checkpoint(tmp_path, {"numpy": generator_state(numpy_generator), "torch": generator_state(torch_generator)})
    expected = numpy_generator.random(4), torch.rand(4, generator=torch_generator)

    saved = load_checkpoint(tmp_path / "checkpoint")
    numpy_restored, torch_restored = np.random.default_rng(0), torch.Generator()
    set_generator_state(numpy_restored, saved["numpy"])
    set_generator_state(torch_restored, saved["torch"])
    assert numpy_restored.random(4).tolist() == expected[0].tolist()
    assert torch.equal(torch.rand(4, generator=torch_restored), expected[1])


def test_a_numpy_state_of_another_bit_generator_is_refused() -> None:
    state = generator_state(np.random.Generator(np.random.PCG64()))
    with pytest.raises(ValueError, match="PCG64"):
        set_generator_state(np.random.Generator(np.random.MT19937()), state)
