"""One run per output folder: a second run is refused naming the holder; a killed run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyfuse.config import validate_pipeline
from polyfuse.errors import PolyfuseError
from polyfuse.training.lock import LOCK_FILE, OutputDirLocked, RunLock
from polyfuse.training.trainer import Trainer

HOLD = textwrap.dedent("""
    import sys, time
    from polyfuse.training.lock import RunLock
    lock = RunLock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on ``tmp_path / "run"``, killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def tiny_config(output_dir: Path, **trainer: object):  # noqa: ANN201
    return validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 2},
        "modalities": {"image": {"encoder": "small-cnn"}},  # no text encoder: nothing to download
        "fuser": {"name": "concat", "params": {"output_dim": 16}},
        "optimizer": {"name": "ppo", "params": {"n_steps": 8}},
        "trainer": {"total_steps": 32, "eval_every": 32, "eval_episodes": 4, "checkpoint_every": 32,
                    "output_dir": str(output_dir), **trainer},
    })


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path, holder: subprocess.Popen) -> None:
    with pytest.raises(OutputDirLocked) as refused:
        RunLock.acquire(tmp_path / "run")
    message = str(refused.value)
    assert f"pid {holder.pid} on {socket.gethostname()}" in message
    assert "--output-dir" in message


def test_a_run_into_a_held_folder_is_refused_untouched(tmp_path: Path, holder: subprocess.Popen) -> None:
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text('{"kind": "train", "step": 8}\n')
    for resume in (False, True):
        with pytest.raises(PolyfuseError, match=f"in use by another run \\(pid {holder.pid}"):
            Trainer(tiny_config(tmp_path / "run"), progress=False, resume=resume).run()
    assert metrics.read_text() == '{"kind": "train", "step": 8}\n'


def test_a_killed_runs_lock_is_taken_over(tmp_path: Path, holder: subprocess.Popen[str], capsys) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    lock_file = tmp_path / "run" / LOCK_FILE
    assert json.loads(lock_file.read_text())["pid"] == holder.pid  # left behind by the killed run
    with RunLock.acquire(tmp_path / "run"):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert f"pid {holder.pid}" in capsys.readouterr().err
    assert lock_file.read_text() == ""  # a clean release leaves no holder behind
    with RunLock.acquire(tmp_path / "run"):
        assert "taking over" not in capsys.readouterr().err


def test_a_run_holds_the_lock_only_while_running_and_resume_works(tmp_path: Path) -> None:
    Trainer(tiny_config(tmp_path), progress=False).run()
    RunLock.acquire(tmp_path).release()  # released when the run ended
    summary = Trainer(tiny_config(tmp_path, total_steps=64), progress=False, resume=True).run()
    assert summary["steps"] >= 64
    with RunLock.acquire(tmp_path):
        pass


def test_an_output_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PolyfuseError, match="writable folder"):
        RunLock.acquire(tmp_path / "file")
