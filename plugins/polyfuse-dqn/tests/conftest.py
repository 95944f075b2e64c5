"""The RL test tasks of polyfuse.rl.testing (a text bandit and a text chain) as fixtures; one torch thread."""

import torch
from polyfuse.rl.testing import helpers, make_pipeline  # noqa: F401 (pytest fixtures)

torch.set_num_threads(1)
