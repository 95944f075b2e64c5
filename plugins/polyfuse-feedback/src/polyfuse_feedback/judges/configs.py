"""Params of the AI judges (``embedding-judge``, ``http-judge``, ``model-judge``). No torch import here."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from polyfuse import ComponentConfig
from pydantic import Field, model_validator

ACTION_NAMES = Field(None, description="Names of the actions, by index, for {action}, {actions} and !n in templates; "
                     "default: read from `env`.")
ENV = Field(None, description="An environment id whose action names the templates use (DigitsVQA's answers, "
            "minigrid's actions); ignored when action_names is given.")


class EmbeddingJudgeConfig(ComponentConfig):
    """Params of ``embedding-judge``: cosine similarity of a segment's candidate text to its reference text."""

    candidate: str = Field(description="Template of the text judged, e.g. '{question} {action}' (fields: the last "
                           "step's text observations and info entries, {action}, {actions}, {steps}; !n names an "
                           "action index).")
    reference: str = Field(description="Template of what the candidate should resemble, e.g. "
                           "'{question} {expert_action!n}' or, on BabyAI, '{mission}' against a candidate '{facing}'.")
    action_names: list[str] | None = ACTION_NAMES
    env: str | None = ENV
    encoder: dict[str, Any] = Field(default_factory=dict, description="Params of the sbert encoder (e.g. {model: <folder>}); "
                          "default: the bundled all-MiniLM-L6-v2.")
    min_margin: float = Field(0.02, ge=0, description="Abstain on a comparison whose similarities differ by less, "
                              "and on a rating this close to the boundary between two levels.")
    temperature: float = Field(0.05, gt=0, description="Confidence of a comparison: sigmoid(margin / temperature).")
    similarity_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Similarities mapped linearly onto ratings 1..scale (below: 1, above: scale).")

    @model_validator(mode="after")
    def _increasing(self) -> EmbeddingJudgeConfig:
        low, high = self.similarity_range
        if not low < high:
            raise ValueError(f"similarity_range must be increasing, got {list(self.similarity_range)}")
        return self


COMPARISON_PROMPT = (
    "Two attempts at the same kind of task are shown.\n\nAttempt A:\n{first}\n\nAttempt B:\n{second}\n\n"
    "Which attempt is better? Reply with only A, B, tie, or \"can't tell\"."
)
RATING_PROMPT = (
    "An attempt at a task is shown.\n\n{first}\n\nRate it from 1 (worst) to {scale} (best). "
    "Reply with only the number, or \"can't tell\"."
)
SYSTEM_PROMPT = "You judge an agent's behaviour. Answer exactly in the format asked."


class HttpJudgeConfig(ComponentConfig):
    """Params of ``http-judge``: an OpenAI-compatible chat-completions endpoint asked about each query."""

    url: str = Field("http://127.0.0.1:8080/v1/chat/completions",
                     description="The chat-completions endpoint (llama.cpp llama-server, vLLM, Ollama's /v1/...).")
    model: str = Field("default", description="The `model` field of each request.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key, sent "
                                    "as a Bearer token (the key itself is never in the config or the logs).")
    segment: str | None = Field(None, description="Template describing one segment (fields as in embedding-judge); "
                                "default: each text observation as 'key: value', then 'actions: ...'.")
    comparison_prompt: str = Field(COMPARISON_PROMPT, description="Prompt of a comparison: {first} and {second} "
                                   "are the two segments described by `segment`.")
    rating_prompt: str = Field(RATING_PROMPT, description="Prompt of a rating: {first} is the segment, {scale} the "
                               "number of levels.")
    system_prompt: str = Field(SYSTEM_PROMPT)
    action_names: list[str] | None = ACTION_NAMES
    env: str | None = ENV
    vision: bool = Field(False, description="Send each segment's last image observations as PNG data URLs.")
    image_keys: list[str] | None = Field(None, description="Observations sent as images; default: every uint8 "
                                         "(H, W, C) observation.")
    min_image_size: int = Field(128, gt=0, description="Images are enlarged (nearest neighbour, whole factors) to at "
                                "least this many pixels a side: an 8x8 digit is unreadable to most VLMs.")
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0)
    default_confidence: float = Field(0.8, ge=0, le=1, description="Confidence of an answer that states none.")
    timeout_s: float = Field(30.0, gt=0, description="Per request.")
    retries: int = Field(2, ge=0, description="Further attempts after a timeout, a 429, a 5xx or a refused connection.")
    backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry, doubled at each next one.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest wait between attempts, Retry-After included.")
    requests_per_minute: float | None = Field(None, gt=0, description="Client-side rate limit; null: none.")
    max_concurrency: int = Field(4, gt=0, description="Requests in flight at once.")


class ModelJudgeConfig(ComponentConfig):
    """Params of ``model-judge``: a saved ``preference-model`` reward labels the queries."""

    reward_model: str = Field(description="A folder written by `polyfuse feedback train-reward`, or the output_dir "
                              "of a run with reward: preference-model (its latest intact checkpoint is read).")
    scale: float = Field(1.0, gt=0, description="Confidence of a comparison: sigmoid(scale * |R2 - R1|), R the "
                         "ensemble's mean predicted return.")
    min_confidence: float = Field(0.6, ge=0.5, le=1, description="Abstain below this confidence.")
    rating_thresholds: list[float] | None = Field(
        None, description="Increasing predicted returns separating the levels of a rating: scale - 1 of them "
        "(rating 1 + the number reached); null: rating queries are abstained on.")

    @model_validator(mode="after")
    def _increasing(self) -> ModelJudgeConfig:
        thresholds = self.rating_thresholds or []
        if any(b <= a for a, b in pairwise(thresholds)):
            raise ValueError(f"rating_thresholds must be increasing, got {thresholds}")
        return self
