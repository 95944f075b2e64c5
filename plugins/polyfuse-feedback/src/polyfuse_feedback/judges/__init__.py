"""AI judges: feedback sources that answer queries with a model instead of the true reward.

- ``embedding-judge``: sentence-embedding similarity of a segment's text to a reference text;
- ``http-judge``: an LLM or VLM behind an OpenAI-compatible chat-completions endpoint;
- ``model-judge``: a saved reward model (``polyfuse feedback train-reward``, or an earlier run's).

:func:`register_judges` registers them; heavy modules are imported by the factories only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polyfuse_feedback.judges.configs import EmbeddingJudgeConfig, HttpJudgeConfig, ModelJudgeConfig


def build_embedding_judge(config: EmbeddingJudgeConfig, seed: int = 0) -> Any:
    from polyfuse_feedback.judges.embedding_judge import EmbeddingJudge, load_sbert

    return EmbeddingJudge(config, load_sbert(config.encoder))


def build_http_judge(config: HttpJudgeConfig, seed: int = 0) -> Any:
    from polyfuse_feedback.judges.http_judge import HttpJudge

    return HttpJudge(config)


def build_model_judge(config: ModelJudgeConfig, seed: int = 0) -> Any:
    from polyfuse_feedback.judges.model_judge import ModelJudge

    return ModelJudge.from_saved(config)


def register_judges(register: Callable[..., Any]) -> None:
    """Register the three judges with a ``register_feedback`` hook's ``register``."""
    register("embedding-judge", build_embedding_judge, config=EmbeddingJudgeConfig,
             description="Sentence-embedding similarity of a segment's text (an answer) to a reference text")
    register("http-judge", build_http_judge, config=HttpJudgeConfig,
             description="An LLM/VLM judge behind an OpenAI-compatible chat-completions endpoint")
    register("model-judge", build_model_judge, config=ModelJudgeConfig,
             description="A preference-model reward trained in an earlier polyfuse run")
