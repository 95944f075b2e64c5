"""Hot reload on its own: the watcher follows the promotion pointer, loads what it names and refuses what does not fit."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gymnasium import spaces
from polyfuse.serving.reload import PromotionWatcher, follows_promotions, incompatibility
from polyfuse.training.checkpoint import STATE_FILE, TENSORS_FILE, save_checkpoint
from polyfuse.training.promotion import POINTER_FILE, Promotion, write_promotion


def checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text("{}")
    (folder / TENSORS_FILE).write_bytes(b"")
    return folder


@dataclass
class Model:
    location: Path
    step: int
    keys: tuple[str, ...] = ("image", "question")
    observation_space: Any = field(default_factory=lambda: spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1))}))
    action_space: Any = field(default_factory=lambda: spaces.Discrete(12))
    action_names: Any = None
    memory_size: int = 0
    closed: bool = False

    def close(self) -> None:
        self.closed = True


class Harness:
    """A watcher over ``run`` whose loads come from ``models`` (checkpoint -> model, or an exception to raise)."""

    def __init__(self, run: Path, serving: Model) -> None:
        self.models: dict[Path, Any] = {}
        self.installed: list[Model] = []
        self.refused = 0
        self.log = io.StringIO()
        self.watcher = PromotionWatcher(run, serving, self.load, self.installed.append, 60.0,
                                        on_refused=self.refuse, log=self.log)

    def load(self, location: Path) -> Model:
        found = self.models[location.resolve()]
        if isinstance(found, Exception):
            raise found
        return found

    def refuse(self) -> None:
        self.refused += 1


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run directory with a checkpoint of its own (what is served when nothing is promoted)."""
    save_checkpoint(tmp_path / "run", {"config": {}, "optimizer": {}})
    return tmp_path / "run"


def test_a_new_promotion_is_loaded_and_installed_once(run: Path, tmp_path: Path) -> None:
    harness = Harness(run, Model(run / "checkpoint", 512))
    harness.watcher.check()
    assert harness.installed == []  # nothing promoted yet
    candidate = checkpoint(tmp_path / "candidate" / "checkpoint")
    harness.models[candidate.resolve()] = new = Model(candidate, 900)
    write_promotion(run, Promotion(candidate, 900))
    harness.watcher.check()
    harness.watcher.check()  # unchanged since: nothing more
    assert harness.installed == [new] and harness.refused == 0 and not new.closed
    assert "reloaded: answering with" in harness.log.getvalue() and "(step 900)" in harness.log.getvalue()


def test_a_promotion_written_before_the_watcher_started_is_loaded(run: Path, tmp_path: Path) -> None:
    """The server loads its model (seconds) before it starts watching: a promotion meanwhile still counts."""
    candidate = checkpoint(tmp_path / "candidate" / "checkpoint")
    write_promotion(run, Promotion(candidate, 900))
    harness = Harness(run, Model(run / "checkpoint", 512))  # loaded before the pointer was written
    harness.models[candidate.resolve()] = new = Model(candidate, 900)
    harness.watcher.check()
    assert harness.installed == [new]


def test_deleting_the_pointer_goes_back_to_the_runs_own_checkpoint(run: Path, tmp_path: Path) -> None:
    candidate = checkpoint(tmp_path / "candidate" / "checkpoint")
    write_promotion(run, Promotion(candidate, 900))
    harness = Harness(run, Model(candidate, 900))
    harness.models[(run / "checkpoint").resolve()] = own = Model(run / "checkpoint", 512)
    (run / POINTER_FILE).unlink()
    harness.watcher.check()
    assert harness.installed == [own]


def test_what_cannot_serve_the_same_clients_is_refused_and_closed(run: Path, tmp_path: Path) -> None:
    harness = Harness(run, Model(run / "checkpoint", 512))
    other = checkpoint(tmp_path / "other" / "checkpoint")
    harness.models[other.resolve()] = wrong = Model(other, 900, keys=("image",))
    write_promotion(run, Promotion(other, 900))
    harness.watcher.check()
    assert harness.installed == [] and harness.refused == 1 and wrong.closed
    log = harness.log.getvalue()
    assert "reload refused:" in log and "observation keys ['image']" in log and "still answering with" in log

    broken = checkpoint(tmp_path / "broken" / "checkpoint")
    harness.models[broken.resolve()] = RuntimeError("size mismatch for fuser.weight")
    write_promotion(run, Promotion(broken, 901))
    harness.watcher.check()
    assert harness.refused == 2 and "does not load: RuntimeError('size mismatch" in harness.log.getvalue()

    (run / POINTER_FILE).write_text("{half a pointer")
    harness.watcher.check()
    harness.watcher.check()  # a refused pointer is not retried until it changes again
    assert harness.refused == 3 and "is damaged" in harness.log.getvalue() and harness.installed == []


def test_incompatibility_names_what_differs(tmp_path: Path) -> None:
    served = Model(tmp_path, 1)
    assert incompatibility(served, Model(tmp_path, 2)) is None
    assert "action space is Discrete(4)" in incompatibility(served, Model(tmp_path, 2, action_space=spaces.Discrete(4)))
    other_space = spaces.Dict({"image": spaces.Box(0, 255, (16, 16, 1))})
    assert "observation space" in incompatibility(served, Model(tmp_path, 2, observation_space=other_space))
    assert "named ('a', 'b')" in incompatibility(served, Model(tmp_path, 2, action_names=("a", "b")))
    assert "has a memory (optimizer.params.memory: 8), the served one has none (0)" in \
        incompatibility(served, Model(tmp_path, 2, memory_size=8))
    assert incompatibility(Model(tmp_path, 1, memory_size=8), Model(tmp_path, 2, memory_size=16)) is None


def test_only_a_run_directory_follows_promotions(run: Path) -> None:
    assert follows_promotions(run)
    assert not follows_promotions(run / "checkpoint")
    assert not follows_promotions(run / "missing")


def test_the_watching_thread_survives_an_unforeseen_failure(run: Path, tmp_path: Path) -> None:
    candidate = checkpoint(tmp_path / "candidate" / "checkpoint")
    log = io.StringIO()
    models = {candidate.resolve(): Model(candidate, 900)}

    def install(model: Model) -> None:
        raise RuntimeError("the batcher is gone")

    watcher = PromotionWatcher(run, Model(run / "checkpoint", 512), lambda path: models[path.resolve()], install,
                               0.01, log=log)
    watcher.start()
    write_promotion(run, Promotion(candidate, 900))
    deadline = time.monotonic() + 60  # seconds on a loaded machine; a watcher that died fails below
    while "unexpected RuntimeError('the batcher is gone')" not in log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    alive = watcher._thread.is_alive()
    watcher.close()
    assert "unexpected RuntimeError('the batcher is gone')" in log.getvalue() and alive
