"""``word-gru``: a learned instruction encoder, word embeddings read by a GRU (as the BabyAI baselines do).

A frozen sentence-transformer (``sbert``) knows English but was never told
which words of "go to the red ball" decide the task; a small encoder trained
with the policy learns exactly that, from the reward. It needs no vocabulary
file: each lower-cased word is hashed (CRC-32, stable across processes and
machines, unlike ``hash``) into one of ``buckets`` embedding rows, so a
checkpoint keeps its meaning for any text. With more buckets than distinct
words collisions are rare; :meth:`WordGRUEncoder.collisions` lists them.

A batch is encoded once per distinct text (instructions repeat: a rollout of
thousands of steps holds a few dozen missions) and gathered back per sample.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from polyfuse.encoding import Encoder, text_batch, weights_digest

PADDING = 0
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def _bucket(word: str, buckets: int) -> int:
    return 1 + zlib.crc32(word.encode()) % buckets


@lru_cache(maxsize=65536)
def tokenize(text: str, buckets: int, max_words: int) -> tuple[int, ...]:
    """The first ``max_words`` words of ``text`` as bucket indices in ``1..buckets`` (0 pads)."""
    words = _WORD.findall(text.lower())[:max_words]
    return tuple(_bucket(word, buckets) for word in words)


class WordGRUEncoder(Encoder):
    """Hashed word embeddings, a one-layer GRU, its last hidden state as the features."""

    def __init__(self, embedding_dim: int, output_dim: int, buckets: int, max_words: int) -> None:
        super().__init__()
        self.buckets = int(buckets)
        self.max_words = int(max_words)
        self.words = nn.Embedding(self.buckets + 1, embedding_dim, padding_idx=PADDING)
        self.gru = nn.GRU(embedding_dim, output_dim, batch_first=True)
        self.output_dim = int(output_dim)

    def forward(self, batch: Any) -> torch.Tensor:
        texts = text_batch(batch, self.modality)
        distinct: dict[str, int] = {}
        rows = [distinct.setdefault(text, len(distinct)) for text in texts]
        features = self._encode([tokenize(text, self.buckets, self.max_words) for text in distinct])
        return features[torch.as_tensor(rows, device=features.device)]

    def _encode(self, sequences: list[tuple[int, ...]]) -> torch.Tensor:
        """``(len(sequences), output_dim)``: the GRU's state after each sequence's last word; zeros for no words."""
        device = self.words.weight.device
        lengths = torch.as_tensor([len(s) for s in sequences], device=device)
        longest = max(int(lengths.max()), 1)
        tokens = torch.full((len(sequences), longest), PADDING, dtype=torch.long, device=device)
        for row, sequence in enumerate(sequences):
            tokens[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        outputs, _ = self.gru(self.words(tokens))  # (S, longest, output_dim); padding comes after the words
        last = outputs[torch.arange(len(sequences), device=device), (lengths - 1).clamp(min=0)]
        return torch.where((lengths > 0)[:, None], last, 0.0)

    def collisions(self, texts: list[str]) -> dict[int, list[str]]:
        """The buckets that two or more distinct words of ``texts`` share (they get one embedding)."""
        owners: dict[int, set[str]] = {}
        for text in texts:
            for word in _WORD.findall(text.lower()):
                owners.setdefault(_bucket(word, self.buckets), set()).add(word)
        return {bucket: sorted(words) for bucket, words in owners.items() if len(words) > 1}

    def identity(self) -> str:
        return f"word-gru:{self.buckets}:{self.max_words}:{self.output_dim}:{weights_digest(self)}"
