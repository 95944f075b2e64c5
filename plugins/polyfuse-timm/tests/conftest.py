"""One torch thread and no hub access: the tests run the same on a laptop and on CI's 2 cores."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: fail fast, never download

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def build():
    """``build(params, space=None)``: a timm encoder built through the registered factory, as pipelines do."""
    from polyfuse_timm.plugin import TimmConfig, build_timm

    def make(params, space=None):
        encoder = build_timm(TimmConfig.model_validate(params), space=space)
        encoder.modality = "camera"
        return encoder

    return make
