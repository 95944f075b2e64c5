"""Weights of the ``timm`` encoder: random, local checkpoints (.safetensors, torch), hub requests offline."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch

from polyfuse_timm.models import WeightsError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random resnet10t (1000-class classifier included) saved as .safetensors and .pth, and its weights."""
    torch.manual_seed(123)
    model = timm.create_model("resnet10t", pretrained=False)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    safetensors.torch.save_file(state, str(folder / "resnet10t.safetensors"))
    torch.save(state, folder / "resnet10t.pth")
    torch.save({"state_dict": state, "epoch": 3}, folder / "wrapped.pth.tar")
    return folder, state


def _assert_loaded(encoder, state):
    loaded = encoder.model.state_dict()
    assert "fc.weight" not in loaded, "the classifier is dropped: the encoder outputs pooled features"
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("filename", ["resnet10t.safetensors", "resnet10t.pth", "wrapped.pth.tar"])
def test_local_checkpoint_weights_are_loaded_exactly(build, saved, filename):
    folder, state = saved
    torch.manual_seed(999)  # a different random init, which the checkpoint must overwrite
    encoder = build({"model": "resnet10t", "image_size": 32, "checkpoint": str(folder / filename)})
    _assert_loaded(encoder, state)


def test_random_init_differs_from_the_checkpoint(build, saved):
    folder, state = saved
    torch.manual_seed(999)
    random = build({"model": "resnet10t", "image_size": 32})
    assert not torch.equal(random.model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    loaded = build({"model": "resnet10t", "image_size": 32, "checkpoint": str(folder / "resnet10t.pth")})
    assert random.identity() != loaded.identity()


def test_checkpoint_of_another_architecture_is_an_error(build, saved):
    folder, _ = saved
    with pytest.raises(
        WeightsError, match=r"resnet10t.safetensors does not fit timm model 'mobilenetv3_small_050'"
    ):
        build({"model": "mobilenetv3_small_050", "checkpoint": str(folder / "resnet10t.safetensors")})


def test_checkpoint_with_other_key_names_is_an_error_not_a_random_model(build, saved, tmp_path):
    _, state = saved
    renamed = tmp_path / "renamed.safetensors"
    safetensors.torch.save_file({f"backbone.{key}": value for key, value in state.items()}, str(renamed))
    with pytest.raises(WeightsError, match=r"\d+ weights missing \(conv1.0.weight, .*unexpected \(backbone."):
        build({"model": "resnet10t", "checkpoint": str(renamed)})


def test_unreadable_or_unsafe_checkpoints_are_errors(build, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*broken.safetensors"):
        build({"model": "resnet10t", "checkpoint": str(broken)})
    pickled = tmp_path / "pickled.pth"
    torch.save({"conv1.0.weight": torch.zeros(1), "hook": _NotAllowed()}, pickled)
    with pytest.raises(WeightsError, match="weights_only=True"):
        build({"model": "resnet10t", "checkpoint": str(pickled)})
    with pytest.raises(WeightsError, match=r"checkpoint file not found: .*missing.pth"):
        build({"model": "resnet10t", "checkpoint": str(tmp_path / "missing.pth")})


class _NotAllowed:
    """An arbitrary object: torch.load(weights_only=True) refuses to unpickle it."""


def test_hub_weights_offline_name_the_local_file_option(build):
    with pytest.raises(WeightsError) as caught:
        build({"model": "resnet10t", "pretrained": True})
    message = str(caught.value)
    assert "Hub downloads need internet" in message
    assert "params.checkpoint" in message and "timm/resnet10t.c3_in1k" in message
