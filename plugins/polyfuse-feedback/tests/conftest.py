"""One torch thread; the RL test tasks of polyfuse.rl.testing (a text bandit) as helpers."""

import torch
from polyfuse.rl.testing import helpers  # noqa: F401 (pytest fixture)

torch.set_num_threads(1)
