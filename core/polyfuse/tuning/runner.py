"""One trial: an ordinary ``polyfuse run`` in its own process, watched through its ``metrics.jsonl``.

Each held-out evaluation the run writes (``{"kind": "eval", "step": ..., "eval/success": ...}``)
is reported to Optuna as an intermediate value; when the pruner says stop, the run gets SIGTERM,
which makes the trainer save a checkpoint and exit. The process has one torch thread, and on Linux
it gets SIGTERM too when the tuner dies, so a killed tuner leaves no orphan training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
STDOUT_FILE = "stdout.log"  # ends with the run's summary as one JSON line
STDERR_FILE = "stderr.log"
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 120
"""A run told to stop saves a checkpoint first; past this it is killed."""


@dataclass
class Outcome:
    """How a trial ended: ``complete`` with a value, ``pruned`` at ``step``, or ``failed`` with an ``error``."""

    state: str
    value: float | None = None
    step: int | None = None
    error: str | None = None
    evaluations: list[tuple[int, float]] = field(default_factory=list)


class EvalTail:
    """The eval records a run appends to its metrics file, read as they arrive (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Eval records written since the last call."""
        try:
            with self.path.open("r", encoding="utf-8") as handle:
                handle.seek(self._offset)
                text = handle.read()
                self._offset = handle.tell()
        except FileNotFoundError:
            return []
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("kind") == "eval":
                new.append(record)
        self.records += new
        return new


# Linux's parent-death signal, set in the child before it becomes `polyfuse run` (Popen's preexec_fn is unsafe
# while the tuner's other threads run); a tuner that died before the call is caught by the ppid check.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys\n"
                    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # PR_SET_PDEATHSIG
                    "if os.getppid() != int(sys.argv[1]):\n    sys.exit(143)\n"
                    "os.execv(sys.argv[2], sys.argv[2:])")


def _command(config_path: Path) -> list[str]:
    command = [sys.executable, "-m", "polyfuse", "run", str(config_path), "--json"]
    if sys.platform != "linux":  # elsewhere a killed tuner's trial runs on to its end, as any subprocess would
        return command
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


def run_trial(
    data: dict[str, Any],
    run_dir: Path,
    metric: str,
    report: Callable[[float, int], bool],
    heartbeat: Callable[[], None],
    stop: Callable[[], bool],
) -> Outcome:
    """Train ``data`` in ``run_dir``; ``report(value, step)`` answers whether to prune, ``stop()`` whether to quit."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / CONFIG_FILE
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tail = EvalTail(run_dir / "metrics.jsonl")
    outcome = Outcome("running")
    with (run_dir / STDOUT_FILE).open("w", encoding="utf-8") as stdout, \
            (run_dir / STDERR_FILE).open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(_command(config_path), stdout=stdout, stderr=stderr, env=env)
        stopping_since: float | None = None
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            heartbeat()
            for record in tail.read():
                if outcome.state != "running" or record["step"] == 0 or metric not in record:
                    continue  # step 0 is the untrained policy: nothing to judge a setting by
                value, step = float(record[metric]), int(record["step"])
                outcome.evaluations.append((step, value))
                if report(value, step):
                    outcome = Outcome("pruned", value, step, evaluations=outcome.evaluations)
            if stopping_since is None and (outcome.state == "pruned" or stop()):
                process.send_signal(signal.SIGTERM)
                stopping_since = time.monotonic()
            elif stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                process.kill()
    tail.read()
    if outcome.state == "pruned":
        return outcome
    if stopping_since is not None:
        return Outcome("failed", error="stopped: the tuner was interrupted", evaluations=outcome.evaluations)
    if process.returncode != 0:
        return Outcome("failed", error=_last_error(run_dir / STDERR_FILE, process.returncode),
                       evaluations=outcome.evaluations)
    return _final(tail.records, metric, outcome.evaluations)


def _final(records: list[dict[str, Any]], metric: str, evaluations: list[tuple[int, float]]) -> Outcome:
    if not records:
        return Outcome("failed", error="the run wrote no held-out evaluation (a pipeline without env cannot be "
                                       "tuned on eval metrics)", evaluations=evaluations)
    last = records[-1]
    if metric not in last:
        keys = ", ".join(key for key in last if key.startswith("eval/"))
        return Outcome("failed", error=f"--metric {metric} is not in the run's eval records (they have: {keys})",
                       evaluations=evaluations)
    return Outcome("complete", float(last[metric]), int(last["step"]), evaluations=evaluations)


def _last_error(path: Path, returncode: int) -> str:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip() and "%|" not in line and "it/s]" not in line]
    return lines[-1] if lines else f"exit status {returncode}"
