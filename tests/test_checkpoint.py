"""Checkpoints: nested state round-trips exactly, saving is atomic, and damage is named, never resumed."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import (
    CHECKPOINT_DIR,
    MANIFEST_FILE,
    STATE_FILE,
    TENSORS_FILE,
    DamagedCheckpoint,
    checkpoint_location,
    flatten_state,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from polyfuse.training.frozen_store import FROZEN_DIR
from polyfuse.training.metrics import read_metrics, truncate_metrics
from polyfuse.training.safetensors_io import file_digest, write_safetensors
from polyfuse.training.seeding import rng_state, set_rng_state
from safetensors.torch import load_file


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
    assert sorted(p.name for p in location.iterdir()) == [STATE_FILE, TENSORS_FILE, MANIFEST_FILE]
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
    shutil.rmtree(tmp_path / f"{CHECKPOINT_DIR}.1")
    (tmp_path / CHECKPOINT_DIR).rename(tmp_path / f"{CHECKPOINT_DIR}.1")
    (tmp_path / f"{CHECKPOINT_DIR}.tmp").mkdir()
    assert load_checkpoint(checkpoint_location(tmp_path))["step"] == 2  # type: ignore[arg-type]
    assert load_latest_checkpoint(tmp_path)[1]["step"] == 2  # type: ignore[index]
    save_checkpoint(tmp_path, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.2"]  # step 2, kept
    assert checkpoint_location(tmp_path / "elsewhere") is None
    assert load_latest_checkpoint(tmp_path / "elsewhere") is None


def test_metrics_after_the_checkpoint_are_truncated(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s}) for s in (100, 200, 300)]
    path.write_text("\n".join(lines) + '\n{"kind": "train", "st')  # the last line cut short by a kill
    truncate_metrics(path, 200)
    assert [r["step"] for r in read_metrics(path)] == [100, 200]


# -- damage is detected, named, and never resumed ---------------------------------------------------


def saves(tmp_path: Path, count: int) -> None:
    for step in range(1, count + 1):
        save_checkpoint(tmp_path, {"step": step, "weights": torch.full((64,), float(step))})


def rehash(location: Path) -> None:
    """Make the manifest agree with the files again, as an attacker or a buggy tool could."""
    manifest = json.loads((location / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = file_digest(location / name).as_dict()
    (location / MANIFEST_FILE).write_text(json.dumps(manifest))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, file, cause", [
    (truncate, TENSORS_FILE, "truncated"),
    (garble, STATE_FILE, "SHA-256 mismatch"),
    (flip_byte, TENSORS_FILE, "SHA-256 mismatch"),
    (lambda path: path.unlink(), MANIFEST_FILE, "no manifest.json"),
])
def test_damaged_files_are_named(tmp_path: Path, damage: object, file: str, cause: str) -> None:
    saves(tmp_path, 1)
    damage(tmp_path / CHECKPOINT_DIR / file)  # type: ignore[operator]
    with pytest.raises(DamagedCheckpoint, match=cause) as caught:
        load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert CHECKPOINT_DIR in str(caught.value)


@pytest.mark.parametrize("damage, file, cause", [
    (truncate, TENSORS_FILE, f"cannot read checkpoint file .*{TENSORS_FILE}"),  # not a raw SafetensorError
    (garble, STATE_FILE, f"cannot read checkpoint .*{STATE_FILE}: UnicodeDecodeError"),
    (lambda path: path.write_text('{"polyfuse_checkpoint": 1, "state": {"w": {"__tensor__": "gone"}}}'),
     STATE_FILE, "does not match checkpoint.safetensors: KeyError"),
    (lambda path: path.write_text("[1, 2"), STATE_FILE, "JSONDecodeError"),
    (lambda path: path.write_text("[]"), STATE_FILE, "not a polyfuse checkpoint"),
])
def test_damage_behind_a_consistent_manifest_is_still_a_clear_error(
    tmp_path: Path, damage: object, file: str, cause: str
) -> None:
    saves(tmp_path, 1)
    damage(tmp_path / CHECKPOINT_DIR / file)  # type: ignore[operator]
    rehash(tmp_path / CHECKPOINT_DIR)
    with pytest.raises(DamagedCheckpoint, match=cause):
        load_checkpoint(tmp_path / CHECKPOINT_DIR)


def test_a_missing_part_of_the_state_is_named(tmp_path: Path) -> None:
    saves(tmp_path, 1)
    with pytest.raises(DamagedCheckpoint, match="lacks optimizer"):
        load_checkpoint(tmp_path / CHECKPOINT_DIR, required=("step", "optimizer"))


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    weights = torch.ones(3, 4)
    weights[1, 2] = float("nan")
    save_checkpoint(tmp_path, {"optimizer": {"model": {"head.weight": weights}}, "epsilon": np.float32(np.inf)})
    with pytest.raises(DamagedCheckpoint, match="NaN or infinite values in optimizer/model/head.weight"):
        load_checkpoint(tmp_path / CHECKPOINT_DIR)
    with pytest.raises(DamagedCheckpoint, match="epsilon"):  # a numpy scalar too
        save_checkpoint(tmp_path, {"epsilon": np.float32(np.inf)})
        load_checkpoint(tmp_path / CHECKPOINT_DIR)


def test_nan_written_into_a_weight_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"weights": torch.ones(16)})
    path = tmp_path / CHECKPOINT_DIR / TENSORS_FILE
    data = bytearray(path.read_bytes())
    data[-4:] = np.array([np.nan], dtype=np.float32).tobytes()  # the last float of the last tensor
    path.write_bytes(bytes(data))
    rehash(tmp_path / CHECKPOINT_DIR)
    with pytest.raises(DamagedCheckpoint, match="NaN or infinite values in weights"):
        load_checkpoint(tmp_path / CHECKPOINT_DIR)


def test_the_last_three_checkpoints_are_kept(tmp_path: Path) -> None:
    saves(tmp_path, 5)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.1", f"{CHECKPOINT_DIR}.2"]
    assert [load_checkpoint(tmp_path / name)["step"] for name in kept] == [5, 4, 3]


def test_a_damaged_latest_falls_back_to_the_previous_intact_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saves(tmp_path, 3)
    flip_byte(tmp_path / CHECKPOINT_DIR / TENSORS_FILE)
    location, state = load_latest_checkpoint(tmp_path, required=("step",))  # type: ignore[misc]
    assert location == tmp_path / f"{CHECKPOINT_DIR}.1" and state["step"] == 2
    warning = capsys.readouterr().err
    assert str(tmp_path / CHECKPOINT_DIR / TENSORS_FILE) in warning and "warning" in warning
    assert str(location) in warning


def test_reading_a_runs_config_skips_a_damaged_json(tmp_path: Path) -> None:
    saves(tmp_path, 2)
    garble(tmp_path / CHECKPOINT_DIR / STATE_FILE)
    assert checkpoint_location(tmp_path) == tmp_path / f"{CHECKPOINT_DIR}.1"


def test_no_intact_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    saves(tmp_path, 2)
    truncate(tmp_path / CHECKPOINT_DIR / TENSORS_FILE)
    garble(tmp_path / f"{CHECKPOINT_DIR}.1" / STATE_FILE)
    with pytest.raises(PolyfuseError, match="no intact checkpoint") as caught:
        load_latest_checkpoint(tmp_path)
    message = str(caught.value)
    assert TENSORS_FILE in message and f"{CHECKPOINT_DIR}.1" in message and "start a new run" in message


# -- writing without copies, frozen encoders once ---------------------------------------------------


def test_the_writer_round_trips_every_layout(tmp_path: Path) -> None:
    tensors = {
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3), "strided": torch.arange(12, dtype=torch.int16).reshape(3, 4).t(),
        "bf16": torch.randn(5, dtype=torch.bfloat16), "bytes": torch.arange(7, dtype=torch.uint8),
        "f32": torch.randn(2, 3),
    }
    digest = write_safetensors(tmp_path / "t.safetensors", tensors, {"a": "b"})
    assert digest == file_digest(tmp_path / "t.safetensors")
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


class FrozenEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 8)
        self.requires_grad_(False)

    def identity(self) -> str:
        return "frozen-test:100x8"


def test_frozen_modules_are_stored_once_and_referenced(tmp_path: Path) -> None:
    encoder = FrozenEncoder()
    model = torch.nn.ModuleDict({"encoder": encoder, "head": torch.nn.Linear(8, 2)})
    save_checkpoint(tmp_path, {"model": model.state_dict()}, frozen=[encoder])
    stored = list((tmp_path / FROZEN_DIR).iterdir())
    assert len(stored) == 1
    written = stored[0].stat().st_mtime_ns, stored[0].stat().st_ino
    with torch.no_grad():
        model["head"].weight.add_(1.0)
    location = save_checkpoint(tmp_path, {"model": model.state_dict()}, frozen=[encoder])
    assert (stored[0].stat().st_mtime_ns, stored[0].stat().st_ino) == written  # never rewritten
    assert "encoder.embedding.weight" not in load_file(str(location / TENSORS_FILE))
    restored = load_checkpoint(location)["model"]
    assert_same(dict(model.state_dict()), restored)
    flip_byte(stored[0])
    with pytest.raises(DamagedCheckpoint, match=FROZEN_DIR):
        load_checkpoint(location)
    save_checkpoint(tmp_path, {"model": model.state_dict()}, frozen=[encoder])  # a damaged store is rewritten
    assert_same(dict(model.state_dict()), load_checkpoint(tmp_path / CHECKPOINT_DIR)["model"])


# -- a run resumes from its newest intact checkpoint -------------------------------------------------


def test_a_run_resumes_past_a_damaged_checkpoint_and_stores_sbert_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml
    from polyfuse.cli import main

    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": 64}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 32}},
        "trainer": {"total_steps": 1024, "eval_every": 1024, "eval_episodes": 16, "checkpoint_every": 256},
    }))
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "--json"]) == 0
    stored = list((out / FROZEN_DIR).iterdir())
    assert len(stored) == 1 and stored[0].stat().st_size > 50e6  # the sentence-transformer, written once
    assert all(stored[0].stat().st_mtime_ns <= (out / name).stat().st_mtime_ns
               for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.1", f"{CHECKPOINT_DIR}.2"))
    assert (out / CHECKPOINT_DIR / TENSORS_FILE).stat().st_size < 10e6  # and referenced, not copied
    flip_byte(out / CHECKPOINT_DIR / TENSORS_FILE)
    capsys.readouterr()
    assert main(["run", str(config), "--output-dir", str(out), "--resume", "--steps", "1280", "--json"]) == 0
    captured = capsys.readouterr()
    assert str(out / CHECKPOINT_DIR / TENSORS_FILE) in captured.err and "SHA-256" in captured.err
    assert json.loads(captured.out.splitlines()[-1])["steps"] >= 1280
    document = json.loads((out / CHECKPOINT_DIR / STATE_FILE).read_text())
    del document["state"]["optimizer"]["model"]  # consistent hashes, but not what the optimizer saved
    (out / CHECKPOINT_DIR / STATE_FILE).write_text(json.dumps(document))
    rehash(out / CHECKPOINT_DIR)
    assert main(["run", str(config), "--output-dir", str(out), "--resume", "--steps", "1536"]) != 0
    captured = capsys.readouterr()
    assert f"cannot restore the optimizer state from {out / CHECKPOINT_DIR}: KeyError" in captured.err
    assert "Traceback" not in captured.err
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.1", f"{CHECKPOINT_DIR}.2"):
        truncate(out / name / TENSORS_FILE)
    assert main(["run", str(config), "--output-dir", str(out), "--resume", "--steps", "2048"]) != 0
    captured = capsys.readouterr()
    assert "no intact checkpoint" in captured.err and "Traceback" not in captured.err


def test_saving_makes_no_copy_of_large_arrays(tmp_path: Path) -> None:
    import tracemalloc

    replay = {"images": np.ones((4096, 8, 8, 64), dtype=np.uint8), "rewards": np.zeros(4096, np.float32)}  # 16 MB
    save_checkpoint(tmp_path, {"replay": replay})  # warm up imports and caches
    tracemalloc.start()
    try:
        save_checkpoint(tmp_path, {"replay": replay})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"a save allocated {peak / 2**20:.1f} MB for a 16 MB array"  # before: 16 MB
    assert np.array_equal(load_checkpoint(tmp_path / CHECKPOINT_DIR)["replay"]["images"], replay["images"])
