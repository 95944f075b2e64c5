"""One run per output folder: an exclusive lock held for the whole run.

Two runs writing to one ``output_dir`` would interleave metrics and
checkpoints, and a fresh run clears the folder under the other's feet. A run
therefore holds ``fcntl.flock`` on ``<output_dir>/.polyfuse.lock``. The
kernel drops that lock when its process ends, however it ends (``kill -9``
included), so a lock left by a dead run is never an obstacle: the next run
simply gets it. The file only names the holder (pid, host, start time) so a
refusal can say who is in the way; it is emptied on a clean release, so
finding it non-empty on acquiring means its last holder died.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from polyfuse.errors import PolyfuseError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".polyfuse.lock"


class OutputDirLocked(PolyfuseError):
    """Another live process holds the output folder."""


class RunLock:
    """The exclusive lock of one run on its output folder; release it (or use ``with``) when the run ends."""

    def __init__(self, directory: Path, descriptor: int) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, directory: Path | str) -> RunLock:
        """Lock ``directory`` (created if needed) or raise :class:`OutputDirLocked` naming the holder."""
        directory = Path(directory)
        path = directory / LOCK_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PolyfuseError(
                f"cannot use {directory} as the run's output_dir ({exc.strerror or exc}); "
                "choose a writable folder with trainer.output_dir or --output-dir"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: a live process holds it
                holder = _read_holder(descriptor)
                os.close(descriptor)
                raise OutputDirLocked(
                    f"{directory} is in use by another run ({describe_holder(holder)}); wait for it to end "
                    "or stop it, or give this run another output_dir (--output-dir)"
                ) from None
        previous = _read_holder(descriptor)
        if previous:
            print(f"note: taking over the lock on {directory} left by a run that ended without releasing it "
                  f"({describe_holder(previous)})", file=sys.stderr)
        _write_holder(descriptor)
        return cls(directory, descriptor)

    def release(self) -> None:
        """Empty the holder record and unlock; the file stays (deleting it lets two runs lock two files)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its Trainer in a long-lived process
        try:
            self.release()
        except Exception:  # at interpreter exit; the kernel drops the lock anyway
            pass


def holder_record() -> dict[str, Any]:
    """Who holds the lock: enough to find the process (pid, host) and tell a restarted run apart (start)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
        "command": " ".join(sys.argv)[:200],
    }


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a process that has not yet recorded its pid"
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    command = holder.get("command")
    return f"{text}: {command}" if command else text


def _read_holder(descriptor: int) -> dict[str, Any] | None:
    try:
        data = os.pread(descriptor, 4096, 0)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return {"pid": "unknown (unreadable lock file)"}
    return holder if isinstance(holder, dict) or holder is None else {"pid": "unknown (unreadable lock file)"}


def _write_holder(descriptor: int) -> None:
    data = json.dumps(holder_record()).encode("utf-8") + b"\n"
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, data, 0)
