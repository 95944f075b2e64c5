"""Hot reload: the server follows ``RUN/promoted.json`` and answers with each newly promoted checkpoint.

A watcher thread polls the pointer's file status every few seconds; when it changed, the checkpoint the
run now resolves to (:func:`~polyfuse.training.saved_policy.checkpoint_folder`) is loaded on that thread,
checked to read and answer exactly what the serving model does, and handed to the batcher, which swaps
it in between two batches. A pointer that cannot be followed, a checkpoint that does not load or does not
fit is refused with a message, and the server keeps answering with what it has.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import STATE_FILE, TENSORS_FILE
from polyfuse.training.promotion import POINTER_FILE
from polyfuse.training.saved_policy import checkpoint_folder

DEFAULT_INTERVAL_S = 5.0


class Servable(Protocol):
    """What the watcher compares and swaps (``ServedModel``)."""

    location: Path
    step: int
    keys: tuple[str, ...]
    observation_space: Any
    action_space: Any
    action_names: Any
    memory_size: int

    def close(self) -> None: ...


def follows_promotions(path: Path) -> bool:
    """Whether ``polyfuse serve path`` can follow promotions: a run directory can, a checkpoint folder is fixed."""
    return path.is_dir() and not ((path / STATE_FILE).is_file() and (path / TENSORS_FILE).is_file())


def incompatibility(serving: Servable, candidate: Servable) -> str | None:
    """Why ``candidate`` cannot replace ``serving`` for the same clients, or None when it can."""
    if candidate.keys != serving.keys:
        return f"it reads observation keys {list(candidate.keys)}, the served model {list(serving.keys)}"
    if candidate.observation_space != serving.observation_space:
        return f"its observation space is {candidate.observation_space}, the served one {serving.observation_space}"
    if candidate.action_space != serving.action_space:
        return f"its action space is {candidate.action_space}, the served one {serving.action_space}"
    if candidate.action_names != serving.action_names:
        return f"its actions are named {candidate.action_names}, the served ones {serving.action_names}"
    if bool(candidate.memory_size) != bool(serving.memory_size):  # clients of one send episode ids, of the other not
        return (f"its policy has {'a memory' if candidate.memory_size else 'no memory'} "
                f"(optimizer.params.memory: {candidate.memory_size}), the served one "
                f"{'has' if serving.memory_size else 'has none'} ({serving.memory_size})")
    return None


class PromotionWatcher:
    """Polls ``run_dir``'s promotion pointer every ``interval_s`` and installs each new checkpoint it names.

    ``load(checkpoint)`` builds a model, ``install(model)`` hands it over (the batcher's swap), and
    ``on_refused()`` counts a refusal; messages go to ``log`` (stderr).
    """

    def __init__(self, run_dir: Path, serving: Servable, load: Callable[[Path], Servable],
                 install: Callable[[Servable], None], interval_s: float = DEFAULT_INTERVAL_S,
                 on_refused: Callable[[], None] | None = None, log: Any = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.run_dir, self.serving, self.load, self.install = Path(run_dir), serving, load, install
        self.interval_s, self.on_refused = interval_s, on_refused
        self.log = log if log is not None else sys.stderr
        # unlike any signature: the first poll compares what the pointer names with the served model, so a
        # promotion written while that model was loading (seconds, before the watcher existed) is not missed
        self._seen: Any = object()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="polyfuse-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop polling (a model being loaded is finished and then dropped)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """One poll: reload when the pointer changed since the last one."""
        signature = self._signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            target = checkpoint_folder(self.run_dir)
        except PolyfuseError as exc:
            self._refuse(str(exc))
            return
        if target.resolve() == Path(self.serving.location).resolve():
            return
        self._say(f"{self.run_dir / POINTER_FILE} changed: loading {target} ...")
        try:
            candidate = self.load(target)
        except Exception as exc:  # noqa: BLE001 (whatever went wrong, the served model stays)
            self._refuse(f"{target} does not load: {exc if isinstance(exc, PolyfuseError) else repr(exc)}")
            return
        problem = incompatibility(self.serving, candidate)
        if problem is not None or self._stop.is_set():
            candidate.close()
            if problem is not None:
                self._refuse(f"{target} cannot answer the served model's clients: {problem}")
            return
        self.install(candidate)
        self.serving = candidate
        self._say(f"reloaded: answering with {target} (step {candidate.step})")

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 (an unforeseen failure must not end the watching)
                self._refuse(f"unexpected {exc!r}")

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = (self.run_dir / POINTER_FILE).stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def _refuse(self, reason: str) -> None:
        self._say(f"reload refused: {reason}; still answering with {self.serving.location} "
                  f"(step {self.serving.step})")
        if self.on_refused is not None:
            self.on_refused()

    def _say(self, message: str) -> None:
        print(f"polyfuse serve: {message}", file=self.log, flush=True)
