"""The feature cache: LRU order, counters, in-batch deduplication, the shared on-disk store
(persistence, concurrent processes, corruption) and which encoders build_network caches."""

from __future__ import annotations

import hashlib
import multiprocessing
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polyfuse.encoding import Encoder, text_batch
from polyfuse.feature_cache import CachedEncoder, FeatureCache, sample_keys
from polyfuse.fusion import Fuser
from polyfuse.network import MultimodalNetwork, should_cache

torch.set_num_threads(1)
DIM = 8


def hashed_features(text: str, salt: str = "") -> torch.Tensor:
    digest = hashlib.sha256((salt + text).encode()).digest()
    return torch.tensor(list(digest[:DIM]), dtype=torch.float32) / 255


class HashingTextEncoder(Encoder):
    """A deterministic frozen text encoder that records every batch it is called on."""

    def __init__(self, salt: str = "") -> None:
        super().__init__()
        self.output_dim = DIM
        self.salt = salt
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)
        self.calls: list[list[str]] = []

    def forward(self, batch) -> torch.Tensor:  # noqa: ANN001
        texts = text_batch(batch, self.modality)
        self.calls.append(texts)
        return torch.stack([hashed_features(t, self.salt) for t in texts]) * self.scale

    def identity(self) -> str:
        return f"hashing:{self.salt}:{float(self.scale)}"


class SumImageEncoder(Encoder):
    """A frozen array encoder (per-sample sums), to check numpy sub-batches."""

    def __init__(self) -> None:
        super().__init__()
        self.output_dim = 2
        self.calls: list[tuple[int, ...]] = []

    def forward(self, batch) -> torch.Tensor:  # noqa: ANN001
        array = np.asarray(batch, dtype=np.float32)
        self.calls.append(array.shape)
        flat = torch.from_numpy(array.reshape(len(array), -1))
        return torch.stack([flat.sum(1), flat.max(1).values], dim=1)

    def identity(self) -> str:
        return "sum-image"


class TrainableEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.output_dim = DIM
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, batch) -> torch.Tensor:  # noqa: ANN001
        return self.linear(torch.stack([hashed_features(t) for t in text_batch(batch, self.modality)]))

    def identity(self) -> str:
        return "trainable"


class AnonymousEncoder(HashingTextEncoder):
    def identity(self) -> str:
        raise NotImplementedError


class ConcatFuser(Fuser):
    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__(input_dims, sum(input_dims.values()))

    def forward(self, features, present=None) -> torch.Tensor:  # noqa: ANN001
        return torch.cat(list(features.values()), dim=1)


def entry_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.pfc"))


def test_lru_evicts_the_least_recently_used_entry() -> None:
    cache = FeatureCache(memory_items=2)
    cache.put("ns", "a", torch.zeros(1))
    cache.put("ns", "b", torch.ones(1))
    assert cache.get("ns", "a") is not None  # a is now the most recent
    cache.put("ns", "c", torch.ones(1))
    assert ("ns", "b") not in cache and ("ns", "a") in cache and ("ns", "c") in cache
    assert cache.get("ns", "b") is None
    assert cache.stats() == {"memory_hits": 1, "disk_hits": 0, "misses": 1, "corrupt": 0, "evictions": 1}


def test_hits_and_misses_are_counted_per_sample() -> None:
    encoder = HashingTextEncoder()
    cache = FeatureCache(memory_items=100)
    cached = CachedEncoder(encoder, cache)
    first = cached(["go to the red ball", "open the door"])
    second = cached(["open the door", "pick up a key", "go to the red ball"])
    assert torch.equal(second[0], first[1]) and torch.equal(second[2], first[0])
    assert torch.equal(second, encoder(["open the door", "pick up a key", "go to the red ball"]))
    assert cached.stats.as_dict() == {"hits": 2, "memory_hits": 2, "disk_hits": 0, "misses": 3, "corrupt": 0}
    assert cache.stats()["memory_hits"] == 2 and cache.stats()["misses"] == 3
    assert encoder.calls[:2] == [["go to the red ball", "open the door"], ["pick up a key"]]


def test_a_batch_of_repeats_calls_the_encoder_once_on_one_sample() -> None:
    encoder = HashingTextEncoder()
    cached = CachedEncoder(encoder, FeatureCache(memory_items=10))
    out = cached(np.array(["go to the green box"] * 16, dtype=object))
    assert encoder.calls == [["go to the green box"]]
    assert out.shape == (16, DIM) and torch.equal(out, hashed_features("go to the green box").expand(16, DIM))
    mixed = cached(["a", "b", "a", "go to the green box", "b"])
    assert encoder.calls[1] == ["a", "b"]
    assert mixed.shape == (5, DIM) and torch.equal(mixed[0], mixed[2])
    assert cached.stats.misses == 3 and cached.stats.hits == 18


def test_numpy_batches_are_sub_batched_as_numpy() -> None:
    encoder = SumImageEncoder()
    cached = CachedEncoder(encoder, FeatureCache(memory_items=10))
    images = np.stack([np.full((4, 4, 3), i, dtype=np.uint8) for i in (1, 2, 1, 3)])
    out = cached(images)
    assert encoder.calls == [(3, 4, 4, 3)]
    assert torch.equal(out, encoder(images))
    cached(torch.from_numpy(images[:2]))  # the same content as a tensor hits the same entries
    assert encoder.calls[-1] == (4, 4, 4, 3) and cached.stats.misses == 3
    keys = sample_keys(images)
    assert keys[0] == keys[2] != keys[1]
    assert sample_keys(images.astype(np.float32))[0] != keys[0]  # dtype is part of the content


def test_features_persist_on_disk_across_caches(tmp_path: Path) -> None:
    first = CachedEncoder(HashingTextEncoder(), FeatureCache(memory_items=10, directory=tmp_path))
    expected = first(["go to the red ball", "open the door"])
    assert len(entry_files(tmp_path)) == 2
    assert (tmp_path / first.namespace / "identity.txt").read_text().endswith("hashing::1.0")
    encoder = HashingTextEncoder()
    second = CachedEncoder(encoder, FeatureCache(memory_items=10, directory=tmp_path))
    assert torch.equal(second(["open the door", "go to the red ball"]), expected.flip(0))
    assert encoder.calls == []
    second(["open the door"])
    assert second.stats.as_dict() == {"hits": 3, "memory_hits": 1, "disk_hits": 2, "misses": 0, "corrupt": 0}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupted_entry_is_recomputed_counted_and_replaced(tmp_path: Path, damage: str) -> None:
    expected = CachedEncoder(HashingTextEncoder(), FeatureCache(10, tmp_path))(["open the door"])
    (path,) = entry_files(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    encoder = HashingTextEncoder()
    cache = FeatureCache(10, tmp_path)
    cached = CachedEncoder(encoder, cache)
    assert torch.equal(cached(["open the door"]), expected)
    assert encoder.calls == [["open the door"]]
    assert cached.stats.corrupt == 1 and cached.stats.misses == 1
    assert cache.stats()["corrupt"] == 1
    assert path.read_bytes() == data  # rewritten whole
    fresh = HashingTextEncoder()
    assert torch.equal(CachedEncoder(fresh, FeatureCache(10, tmp_path))(["open the door"]), expected)
    assert fresh.calls == []


def test_identity_differences_isolate_entries(tmp_path: Path) -> None:
    cache = FeatureCache(10, tmp_path)
    plain, salted = HashingTextEncoder(), HashingTextEncoder(salt="v2")
    a = CachedEncoder(plain, cache)(["open the door"])
    b = CachedEncoder(salted, cache)(["open the door"])
    assert salted.calls == [["open the door"]] and not torch.equal(a, b)
    assert len({path.parent.parent for path in entry_files(tmp_path)}) == 2
    # new weights in place (a loaded checkpoint) give a new namespace: nothing stale is served
    cached = CachedEncoder(plain, cache)
    with torch.no_grad():
        plain.scale.mul_(2)
    assert torch.equal(cached(["open the door"]), 2 * a)
    assert len(plain.calls) == 2


def test_trainable_and_anonymous_encoders_are_not_wrapped() -> None:
    encoders = {"mission": HashingTextEncoder(), "tuned": TrainableEncoder(), "anon": AnonymousEncoder()}
    assert [should_cache(e) for e in encoders.values()] == [True, False, False]
    dims = {name: encoder.output_dim for name, encoder in encoders.items()}
    network = MultimodalNetwork(encoders, {n: n for n in encoders}, ConcatFuser(dims), FeatureCache(100))
    assert list(network.cached_encoders) == ["mission"]
    assert all(not k.endswith("scale") or k.startswith("encoders.") for k in network.state_dict())
    batch = {name: ["open the door"] * 4 for name in encoders}
    network(batch)
    network(batch)
    stats = network.cache_stats()
    assert stats["misses"] == 1 and stats["hits"] == 7 and stats["mission/hits"] == 7
    assert not any(key.startswith(("tuned/", "anon/")) for key in stats)
    uncached = MultimodalNetwork(encoders, {n: n for n in encoders}, ConcatFuser(dims))
    assert uncached.cached_encoders == {} and set(uncached.cache_stats().values()) == {0}


def test_build_network_follows_the_feature_cache_config(tmp_path: Path) -> None:
    from polyfuse.network import feature_store_for
    from polyfuse.config import FeatureCacheConfig

    assert feature_store_for(FeatureCacheConfig(enabled=False)) is None
    store = feature_store_for(FeatureCacheConfig(memory_items=5, directory=tmp_path))
    assert store is feature_store_for(FeatureCacheConfig(memory_items=5, directory=tmp_path))  # one per process
    assert store.disk is not None and store.memory_items == 5


WORKER = textwrap.dedent(
    """
    import hashlib
    import torch
    from polyfuse.encoding import Encoder
    from polyfuse.feature_cache import CachedEncoder, FeatureCache

    class Encoder8(Encoder):
        output_dim = 8
        def forward(self, batch):
            return torch.stack([torch.tensor(list(hashlib.sha256(t.encode()).digest()[:8]),
                                             dtype=torch.float32) for t in batch])
        def identity(self):
            return "worker-encoder"

    def work(directory, texts, rounds):
        torch.set_num_threads(1)
        out = []
        for _ in range(rounds):  # a fresh in-memory tier each round: every look-up goes to disk
            cached = CachedEncoder(Encoder8(), FeatureCache(0, directory))
            out.append(cached(texts).tolist())
        return out
    """
)


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    (tmp_path / "pfc_worker.py").write_text(WORKER)
    sys.path.insert(0, str(tmp_path))
    try:
        import pfc_worker

        directory = tmp_path / "cache"
        texts = [f"mission {i}" for i in range(64)]
        context = multiprocessing.get_context("spawn")
        with context.Pool(2) as pool:
            results = pool.starmap(pfc_worker.work, [(directory, texts, 20), (directory, texts[::-1], 20)])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pfc_worker", None)
    forward, backward = results
    assert all(run == forward[0] for run in forward) and all(run == backward[0] for run in backward)
    assert forward[0] == backward[0][::-1]
    assert len(entry_files(directory)) == 64
    assert not [p for p in directory.rglob(".tmp-*")]
    check = CachedEncoder(HashingTextEncoder(), FeatureCache(0, directory))  # a different identity
    check(texts[:1])
    assert check.stats.misses == 1


def test_a_copied_network_shares_the_cache_and_follows_replaced_weights() -> None:
    import copy

    encoder = HashingTextEncoder()
    network = MultimodalNetwork({"m": encoder}, {"m": "m"}, ConcatFuser({"m": DIM}), FeatureCache(100))
    network({"m": ["open the door"]})
    target = copy.deepcopy(network)
    (wrapper,) = target.cached_encoders.values()
    assert wrapper.encoder is target.encoders["m"] and wrapper.store is network.cached_encoders["m"].store
    target({"m": ["open the door"]})
    assert target.encoders["m"].calls == [["open the door"]]  # the copy's history, not a new call
    encoder.scale = nn.Parameter(torch.full((), 3.0), requires_grad=False)  # a replaced weight
    assert torch.equal(network({"m": ["open the door"]}), 3 * hashed_features("open the door").unsqueeze(0))
    encoder.scale.requires_grad_(True)  # unfrozen later: computed every time, never cached
    network({"m": ["open the door"]})
    assert len(encoder.calls) == 3


def test_an_entry_replaced_by_a_directory_costs_that_entry_only(tmp_path: Path) -> None:
    texts = ["go to the red ball", "open the door", "pick up the key"]
    expected = CachedEncoder(HashingTextEncoder(), FeatureCache(10, tmp_path))(texts)
    first = min(entry_files(tmp_path))  # not necessarily texts[0]'s: any entry will do
    for path in entry_files(tmp_path):
        path.unlink()
    first.mkdir()
    (first / "stray").write_text("not an entry")
    encoder = HashingTextEncoder()
    cached = CachedEncoder(encoder, FeatureCache(10, tmp_path))
    assert torch.equal(cached(texts), expected)
    assert len(entry_files(tmp_path)) == 3 and first.is_file()  # the bad one repaired, the others written
    fresh = HashingTextEncoder()
    assert torch.equal(CachedEncoder(fresh, FeatureCache(10, tmp_path))(texts), expected)
    assert fresh.calls == []  # a later run finds every entry


def test_an_unwritable_entry_does_not_stop_other_writes(tmp_path: Path, monkeypatch) -> None:
    from polyfuse.feature_cache import disk

    store = disk.DiskStore(tmp_path)
    real_replace = disk.os.replace

    def failing_replace(source, target):
        if str(target).endswith("bad.pfc"):
            raise IsADirectoryError(21, "Is a directory", str(target))
        return real_replace(source, target)

    monkeypatch.setattr(disk.os, "replace", failing_replace)
    with pytest.warns(RuntimeWarning, match="bad.pfc"):
        store.save("ns", "bad", torch.ones(2))
    store.save("ns", "good", torch.ones(2))
    assert torch.equal(store.load("ns", "good"), torch.ones(2))
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_full_disk_stops_writes_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import warnings

    from polyfuse.feature_cache import disk

    store = disk.DiskStore(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk.tempfile, "mkstemp", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key in ("a", "b", "c"):
            store.save("ns", key, torch.ones(2))
    assert len(caught) == 1 and "no longer saved" in str(caught[0].message)


def test_stale_temporary_files_are_cleaned(tmp_path: Path) -> None:
    import os
    import time

    cache = FeatureCache(10, tmp_path)
    CachedEncoder(HashingTextEncoder(), cache)(["open the door"])
    (path,) = entry_files(tmp_path)
    stale, live = path.parent / ".tmp-stale", path.parent / ".tmp-live"
    stale.write_bytes(b"left by a killed process")
    live.write_bytes(b"being written by another process")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    path.unlink()
    CachedEncoder(HashingTextEncoder(), FeatureCache(10, tmp_path))(["open the door"])
    assert path.is_file() and live.exists() and not stale.exists()


def test_a_file_where_a_folder_belongs_is_replaced(tmp_path: Path) -> None:
    expected = CachedEncoder(HashingTextEncoder(), FeatureCache(10, tmp_path))(["open the door"])
    (path,) = entry_files(tmp_path)
    path.unlink()
    path.parent.rmdir()
    path.parent.write_text("a file where the fan-out folder belongs")
    again = CachedEncoder(HashingTextEncoder(), FeatureCache(10, tmp_path))(["open the door"])
    assert torch.equal(again, expected) and path.is_file()
