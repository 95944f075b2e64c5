"""Checkpoints: nested state round-trips through safetensors + JSON exactly, and saving is atomic."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from polyfuse.training.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FILE,
    TENSORS_FILE,
    checkpoint_location,
    flatten_state,
    load_checkpoint,
    save_checkpoint,
)
from polyfuse.training.metrics import read_metrics, truncate_metrics
from polyfuse.training.seeding import rng_state, set_rng_state


def nested_state() -> dict[str, object]:
    model = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    adam.step()
    return {
        "model": model.state_dict(),
        "adam": adam.state_dict(),  # int keys, tuples, None
        "replay": {"questions": np.array(["what digit is this?", "is it odd?"], dtype=object),
                   "labels": np.array([["a", "bc"]]),
                   "images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4)},
        "step": 1234, "epsilon": np.float32(0.05), "name": "ppo", "flags": [True, None, 2.5],
        "generator": torch.Generator().manual_seed(3).get_state(),
        "rng": rng_state(),
    }


def assert_same(a: object, b: object) -> None:
    if isinstance(a, dict):  # an OrderedDict comes back a dict, which load_state_dict takes alike
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])  # type: ignore[index]
        return
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)  # type: ignore[arg-type]
        for x, y in zip(a, b):  # type: ignore[call-overload]
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)  # type: ignore[union-attr]
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()  # type: ignore[union-attr]
    else:
        assert a == b


def test_nested_state_round_trips_exactly(tmp_path: Path) -> None:
    state = nested_state()
    location = save_checkpoint(tmp_path, state)
    assert sorted(p.name for p in location.iterdir()) == [STATE_FILE, TENSORS_FILE]
    restored = load_checkpoint(location)
    assert_same(state, restored)
    document = json.loads((location / STATE_FILE).read_text())
    assert document["state"]["replay"]["questions"]["__textarray__"] == ["what digit is this?", "is it odd?"]


def test_restored_rng_state_replays_the_same_numbers(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(checkpoint_location(tmp_path))["rng"])  # type: ignore[arg-type]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unstorable_values_are_named_by_path() -> None:
    with pytest.raises(TypeError, match=r"at optimizer\.buffer is a set"):
        flatten_state({"optimizer": {"buffer": {1, 2}}})


def test_a_save_cut_short_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    assert load_checkpoint(checkpoint_location(tmp_path))["step"] == 2  # type: ignore[arg-type]
    # killed after moving the current checkpoint aside, before the new one was moved in:
    (tmp_path / CHECKPOINT_DIR).rename(tmp_path / f"{CHECKPOINT_DIR}.old")
    (tmp_path / f"{CHECKPOINT_DIR}.tmp").mkdir()
    assert load_checkpoint(checkpoint_location(tmp_path))["step"] == 2  # type: ignore[arg-type]
    save_checkpoint(tmp_path, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_DIR]
    assert checkpoint_location(tmp_path / "elsewhere") is None


def test_metrics_after_the_checkpoint_are_truncated(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s}) for s in (100, 200, 300)]
    path.write_text("\n".join(lines) + '\n{"kind": "train", "st')  # the last line cut short by a kill
    truncate_metrics(path, 200)
    assert [r["step"] for r in read_metrics(path)] == [100, 200]
