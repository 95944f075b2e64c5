"""The promotion pointer: which checkpoint a deployed run answers with after retraining.

A run that is served (``polyfuse serve RUN``) stays the deployment's address; a retrained
candidate that passed its comparison is *promoted* by writing ``RUN/promoted.json``, which
names the candidate's checkpoint. Everything that loads ``RUN`` as a policy (serve, eval,
export, ``--continue-from``) follows the pointer, and the server reloads when it changes.
The file is replaced atomically, so a reader sees the old pointer or the new one, never half.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError

POINTER_FILE = "promoted.json"
LOCK_FILE = ".promotion.lock"


@dataclass(frozen=True)
class Promotion:
    """A promoted checkpoint, the step it was saved at, and the figures that justified promoting it."""

    checkpoint: Path
    step: int
    figures: dict[str, Any] = field(default_factory=dict)
    promoted_at: float = field(default_factory=time.time)


def read_promotion(run_dir: Path) -> Promotion | None:
    """The pointer in ``run_dir``, or None when nothing was promoted there."""
    pointer = Path(run_dir) / POINTER_FILE
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        return Promotion(Path(data["checkpoint"]), int(data["step"]), dict(data.get("figures") or {}),
                         float(data["promoted_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolyfuseError(f"{pointer} is damaged ({type(exc).__name__}: {exc}); delete it to serve the run's "
                            "own checkpoint, or promote a candidate again") from None


def write_promotion(run_dir: Path, promotion: Promotion) -> Path:
    """Point ``run_dir`` at ``promotion.checkpoint`` (atomically: written beside, flushed, then renamed)."""
    pointer = Path(run_dir) / POINTER_FILE
    staging = pointer.with_name(f".{POINTER_FILE}.{os.getpid()}.tmp")
    data = {**asdict(promotion), "checkpoint": str(Path(promotion.checkpoint).resolve())}
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, pointer)
    return pointer


def promoted_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint folder promoted in ``run_dir``, checked to still exist; None when nothing was promoted."""
    promotion = read_promotion(run_dir)
    if promotion is None:
        return None
    if not promotion.checkpoint.is_dir():
        raise PolyfuseError(f"{Path(run_dir) / POINTER_FILE} promotes {promotion.checkpoint}, which no longer "
                            "exists; restore that run directory, or delete the pointer to serve the run's own "
                            "checkpoint")
    return promotion.checkpoint


@contextmanager
def promotion_lock(run_dir: Path) -> Iterator[None]:
    """Held while a gate checks that the pointer is unchanged and rewrites it, so two gates promoting into
    ``run_dir`` at once cannot both pass that check (``fcntl.flock``; not exclusive where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    descriptor = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
