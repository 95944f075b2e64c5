"""Features of frozen encoders, computed once per distinct input.

A frozen encoder is a pure function of its input, and RL revisits the same
inputs constantly (BabyAI has a few dozen mission strings over 100k steps), so
each sample's features are stored under ``(namespace, content hash)``: the
namespace digests the encoder's :meth:`~polyfuse.encoding.Encoder.identity`
(architecture, preprocessing, weights), the content hash the raw sample.
Trainable encoders are never cached: their output changes with every update.

Two tiers: an in-memory LRU per process and an optional directory that any
number of processes share, whose entries are atomic and checksummed.

One job per module: :mod:`.keys` (namespaces and sample hashes),
:mod:`.weights` (noticing changed weights), :mod:`.disk` (the on-disk
entries), :mod:`.store` (the two tiers) and :mod:`.cached` (the encoder wrapper).
"""

from polyfuse.feature_cache.cached import CachedEncoder, CacheStats
from polyfuse.feature_cache.keys import identity_namespace, sample_keys
from polyfuse.feature_cache.store import FeatureCache, shared_store
from polyfuse.feature_cache.weights import WeightsWatch

__all__ = [
    "CacheStats",
    "CachedEncoder",
    "FeatureCache",
    "WeightsWatch",
    "identity_namespace",
    "sample_keys",
    "shared_store",
]
