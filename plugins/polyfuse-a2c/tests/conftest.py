"""Fixtures: the small text tasks of polyfuse.rl.testing (bandit and chain), trained with one torch thread."""

import torch
from polyfuse.rl.testing import helpers, make_pipeline  # noqa: F401 (pytest fixtures)

torch.set_num_threads(1)
