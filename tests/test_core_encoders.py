"""The core's small encoders, built by name from gymnasium spaces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces

from polyfuse.errors import PolyfuseError
from polyfuse.registry import default_registry

torch.set_num_threads(1)


def build(name: str, space, **params):
    encoder = default_registry().create("encoders", name, params, space=space)
    encoder.modality = "obs"
    return encoder


def test_vector_rescales_by_bounds_and_outputs_declared_dim() -> None:
    space = spaces.Box(low=np.array([0.0, -10.0]), high=np.array([255.0, 10.0]), dtype=np.float32)
    encoder = build("vector", space, hidden_sizes=[8], output_dim=5)
    scaled = (torch.tensor([[255.0, -10.0]]) - encoder.center) / encoder.half_range
    assert torch.allclose(scaled, torch.tensor([[1.0, -1.0]]))
    out = encoder(np.zeros((4, 2), np.float32))
    assert out.shape == (4, encoder.output_dim) == (4, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_vector_errors_name_modality_and_sample() -> None:
    encoder = build("vector", spaces.Box(-1, 1, (3,)))
    bad = np.zeros((3, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="modality 'obs': sample 2 contains NaN"):
        encoder(bad)
    with pytest.raises(ValueError, match="modality 'obs': expected samples of shape"):
        encoder(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="modality 'obs': expected a numeric array batch"):
        encoder(["a", "b"])


def test_onehot_and_embedding_of_discrete_values() -> None:
    space = spaces.Discrete(4, start=1)
    onehot = build("onehot", space)
    assert onehot(np.array([1, 4])).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="sample 1 has value 5.0"):
        onehot(np.array([2, 5]))
    embedding = build("embedding", space, output_dim=3)
    out = embedding(np.array([1, 1, 3]))
    assert out.shape == (3, 3) and torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_small_cnn_on_digits_and_minigrid_grids() -> None:
    digits = build("small-cnn", spaces.Box(0, 255, (8, 8, 1), np.uint8), channels=[4], output_dim=16)
    assert digits.scale == 255.0
    assert digits(np.random.randint(0, 256, (5, 8, 8, 1), dtype=np.uint8)).shape == (5, 16)
    assert digits(np.zeros((2, 8, 8), np.uint8)).shape == (2, 16), "grayscale without a channel axis"
    grid = build("small-cnn", spaces.Box(0, 10, (7, 7, 3), np.uint8))
    out = grid(np.random.randint(0, 11, (3, 7, 7, 3)))
    assert out.shape == (3, grid.output_dim) == (3, 128)
    with pytest.raises(ValueError, match=r"modality 'obs': expected images of shape \(7, 7, 3\)"):
        grid(np.zeros((3, 8, 8, 3)))


def test_wrong_space_is_a_clear_error() -> None:
    with pytest.raises(PolyfuseError, match="encoder 'onehot' needs an observation of type Discrete, got Box"):
        build("onehot", spaces.Box(0, 1, (2,)))
    with pytest.raises(PolyfuseError, match="encoder 'small-cnn' needs an observation of type Box, got Text"):
        build("small-cnn", spaces.Text(10))


def test_registration_imports_no_torch() -> None:
    probe = subprocess.run([sys.executable, "-c", "import sys, polyfuse.builtins.encoders;"
                            "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr
