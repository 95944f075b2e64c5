"""One torch thread: the tests are small and the machines shared."""

import torch

torch.set_num_threads(1)
