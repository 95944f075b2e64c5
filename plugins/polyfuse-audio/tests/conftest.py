"""One torch thread and no hub access: the tests run the same on a laptop and on CI's 2 cores."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: fail fast, never download

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))  # audio_signals, shared by the tests

