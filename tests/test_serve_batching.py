"""The serving batcher on its own: concurrent requests share forward passes and each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import numpy as np
import pytest
from polyfuse.serving.batching import Batcher


@dataclass(frozen=True)
class Rows:
    doubled: np.ndarray


class Model:
    """Doubles its input; records each batch size; the first call waits until told, so requests pile up."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.episodes: list[list[str | None]] = []
        self.release = threading.Event()

    def __call__(self, batch: dict, episodes: list[str | None]) -> Rows:
        self.release.wait(10)
        self.sizes.append(len(batch["x"]))
        self.episodes.append(episodes)
        if (batch["x"] < 0).any():
            raise ValueError("negative input")
        return Rows(batch["x"] * 2)


def test_requests_waiting_together_run_as_one_batch_up_to_max_batch() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=8, max_wait_s=0.05)

    async def main() -> list[Rows]:
        requests = [batcher.submit({"x": np.array([i, 100 + i])}, [f"e{i}", None]) for i in range(10)]
        tasks = [asyncio.ensure_future(r) for r in requests]
        await asyncio.sleep(0.2)  # all ten are queued behind the first forward pass
        model.release.set()
        return await asyncio.gather(*tasks)

    answers = [answer for answer, _ in asyncio.run(main())]
    batcher.close()
    assert [a.doubled.tolist() for a in answers] == [[2 * i, 2 * (100 + i)] for i in range(10)]
    assert sum(model.sizes) == 20 and max(model.sizes) == 8 and len(model.sizes) < 10
    # each row's episode travels with it, in the batch's row order (a policy with memory continues it)
    assert [e for batch in model.episodes for e in batch] == [e for i in range(10) for e in (f"e{i}", None)]


def test_a_failing_batch_fails_its_requests_and_the_worker_carries_on() -> None:
    model = Model()
    model.release.set()
    batcher = Batcher(model, max_batch=4, max_wait_s=0.0)

    async def main() -> Rows:
        with pytest.raises(ValueError, match="negative"):
            await batcher.submit({"x": np.array([-1])})
        return (await batcher.submit({"x": np.array([3])}))[0]

    assert asyncio.run(main()).doubled.tolist() == [6]
    batcher.close()


class Tripler(Model):
    def __call__(self, batch: dict, episodes: list[str | None]) -> Rows:
        return Rows(batch["x"] * 3)


def test_a_swap_takes_effect_between_batches_and_each_answer_names_its_model() -> None:
    old, new = Model(), Tripler()
    new.release.set()
    swaps: list[tuple[object, object, int]] = []
    batcher = Batcher(old, max_batch=8, max_wait_s=0.05, on_swap=lambda a, b: swaps.append((a, b, len(old.sizes))))

    async def main() -> list[tuple[Rows, object]]:
        before = [asyncio.ensure_future(batcher.submit({"x": np.array([i])})) for i in range(3)]
        await asyncio.sleep(0.1)  # queued behind the old model's first (held) forward pass
        batcher.swap(new)
        after = [asyncio.ensure_future(batcher.submit({"x": np.array([i])})) for i in range(3)]
        old.release.set()
        return await asyncio.gather(*before, *after)

    answers = asyncio.run(main())
    batcher.close()
    assert [a.doubled.tolist() for a, _ in answers] == [[0], [2], [4], [0], [3], [6]]
    assert [m for _, m in answers] == [old] * 3 + [new] * 3
    assert swaps == [(old, new, len(old.sizes))] and sum(old.sizes) == 3  # swapped after the old one's last batch


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Model(), max_batch=0, max_wait_s=0.0)
    with pytest.raises(ValueError, match="max_wait_s"):
        Batcher(Model(), max_batch=1, max_wait_s=-1)
