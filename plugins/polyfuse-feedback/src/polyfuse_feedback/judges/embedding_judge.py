"""The ``embedding-judge``: prefers the segment whose candidate text is closer to its reference, by sentence embedding.

A segment is judged by two texts filled from it (see :mod:`.fields`): a
*candidate* (an answer, a description of what the agent reached) and a
*reference* (the expected answer, the mission). Their cosine similarity
under a sentence-transformers model is the segment's score; it needs no
reward and no labels, only text that says what happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label
from polyfuse.rewards import Segment

from polyfuse_feedback.judges.fields import Template, resolve_action_names
from polyfuse_feedback.judges.scoring import ScoringJudge

if TYPE_CHECKING:
    from polyfuse_feedback.judges.configs import EmbeddingJudgeConfig

SBERT_HINT = "embedding-judge embeds text with the sbert encoder: pip install polyfuse-sbert"


def load_sbert(params: dict[str, Any], registry: Any = None) -> Any:
    """The registry's frozen ``sbert`` encoder, or an error saying what to install."""
    if registry is None:
        from polyfuse.registry import default_registry

        registry = default_registry()
    if "sbert" not in registry.names("encoders"):
        raise PolyfuseError(SBERT_HINT)
    encoder = registry.create("encoders", "sbert", {**params, "trainable": False, "normalize": True})
    encoder.modality = "embedding-judge"
    return encoder


class EmbeddingJudge(ScoringJudge):
    """Scores a segment by cos(candidate, reference); compares scores, or maps one onto a rating scale."""

    def __init__(self, config: EmbeddingJudgeConfig, encoder: Any) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        names = resolve_action_names(config.action_names, config.env)
        self.candidate = Template(config.candidate, names, "candidate")
        self.reference = Template(config.reference, names, "reference")

    def scores(self, segments: Sequence[Segment]) -> np.ndarray:
        """cos(candidate, reference) of each segment, the texts embedded once each."""
        pairs = [(self.candidate.render(s), self.reference.render(s)) for s in segments]
        texts = list(dict.fromkeys(text for pair in pairs for text in pair))
        with torch.no_grad():
            embeddings = self.encoder(texts).float().numpy()
        row = {text: i for i, text in enumerate(texts)}
        return np.array([float(embeddings[row[a]] @ embeddings[row[b]]) for a, b in pairs])

    def compare(self, first: float, second: float) -> Label | None:
        margin = second - first
        if abs(margin) < self.config.min_margin:
            return None
        confidence = 1.0 / (1.0 + math.exp(-min(abs(margin) / self.config.temperature, 60.0)))
        return Label(1.0 if margin > 0 else 0.0, confidence)

    def rate(self, similarity: float, scale: int) -> Label | None:
        low, high = self.config.similarity_range
        position = min(max((similarity - low) / (high - low), 0.0), 1.0) * scale  # in [0, scale]
        level = min(int(position), scale - 1)  # 0-based
        edges = [edge for edge in (level, level + 1) if 0 < edge < scale]  # boundaries with other levels
        distance = min(abs(position - edge) for edge in edges)  # in levels; the end levels reach past one edge
        if distance * (high - low) / scale < self.config.min_margin:
            return None
        return Label(rating=level + 1, confidence=min(1.0, 0.5 + distance))
