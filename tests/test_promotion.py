"""The promotion pointer: written atomically, followed by everything that loads a run as a policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import STATE_FILE, TENSORS_FILE
from polyfuse.training.promotion import POINTER_FILE, Promotion, promoted_checkpoint, read_promotion, write_promotion
from polyfuse.training.saved_policy import checkpoint_folder


def fake_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text("{}")
    (folder / TENSORS_FILE).write_bytes(b"")
    return folder


def test_nothing_promoted(tmp_path: Path) -> None:
    assert read_promotion(tmp_path) is None
    assert promoted_checkpoint(tmp_path) is None


def test_written_pointer_reads_back_and_leaves_no_staging_file(tmp_path: Path) -> None:
    candidate = fake_checkpoint(tmp_path / "candidate" / "checkpoint")
    served = tmp_path / "served"
    served.mkdir()
    write_promotion(served, Promotion(candidate, 1200, {"candidate": 0.9, "incumbent": 0.8}))
    promotion = read_promotion(served)
    assert promotion is not None and promotion.checkpoint == candidate.resolve() and promotion.step == 1200
    assert promotion.figures == {"candidate": 0.9, "incumbent": 0.8}
    assert [p.name for p in served.iterdir()] == [POINTER_FILE]


def test_checkpoint_folder_follows_the_pointer(tmp_path: Path) -> None:
    own = fake_checkpoint(tmp_path / "served" / "checkpoint")
    candidate = fake_checkpoint(tmp_path / "candidate" / "checkpoint")
    assert checkpoint_folder(own) == own
    write_promotion(own.parent, Promotion(candidate, 5))
    assert checkpoint_folder(own.parent) == candidate.resolve()
    assert checkpoint_folder(own) == own  # a checkpoint folder given directly is taken as it is


def test_pointer_to_a_deleted_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    candidate = fake_checkpoint(tmp_path / "candidate" / "checkpoint")
    write_promotion(tmp_path, Promotion(candidate, 5))
    for path in candidate.iterdir():
        path.unlink()
    candidate.rmdir()
    with pytest.raises(PolyfuseError, match="no longer exists; restore"):
        checkpoint_folder(tmp_path)


def test_damaged_pointer_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / POINTER_FILE).write_text("{not json")
    with pytest.raises(PolyfuseError, match="is damaged"):
        read_promotion(tmp_path)
