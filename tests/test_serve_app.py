"""The serving app driven through ASGI in this process (no server, no trained run): what a failing model does."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("fastapi")

from asgi_helpers import request, serving  # noqa: E402
from polyfuse.serving.app import create_app  # after the skip: needs polyfuse[serve]
from polyfuse.serving.model import Answer


@dataclass
class Model:
    """What the app reads of a served model; ``fail`` makes its forward pass raise."""

    fail: bool = False
    location: Path = Path("run/checkpoint")
    step: int = 7
    keys: tuple[str, ...] = ("x",)
    observation_space: Any = field(default_factory=lambda: spaces.Dict({"x": spaces.Box(-1.0, 1.0, (2,), np.float32)}))
    action_names: Any = None
    action_start: int = 0
    memory_size: int = 0
    memories: Any = None

    def __call__(self, batch: dict, episodes: list) -> Answer:
        if self.fail:
            raise RuntimeError("the model's forward pass failed")
        rows = len(batch["x"])
        return Answer(np.zeros(rows, np.int64), np.full((rows, 2), 0.5, np.float32))

    def describe(self) -> dict[str, Any]:
        return {"step": self.step}

    def close(self) -> None:
        pass


def test_a_failing_model_is_a_500_counted_in_the_metrics() -> None:
    body = json.dumps({"observation": {"x": [0.0, 0.5]}}).encode()

    async def exchanges(app: Any) -> tuple[Any, ...]:
        answered = await request(app, "POST", "/v1/act", body)
        app_metrics = await request(app, "GET", "/metrics")
        return answered, app_metrics

    (status, _), (_, metrics) = asyncio.run(serving(create_app(Model(fail=True)), exchanges))
    assert status == 500
    assert 'polyfuse_requests_total{status="500"} 1' in metrics.decode()

    (status, answer), (_, metrics) = asyncio.run(serving(create_app(Model()), exchanges))
    assert status == 200 and json.loads(answer)["step"] == 7
    assert 'polyfuse_requests_total{status="200"} 1' in metrics.decode() and 'status="5' not in metrics.decode()
