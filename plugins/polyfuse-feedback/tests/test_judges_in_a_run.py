"""The http-judge example, shortened, trains end to end against a loopback chat server — a good judge, a judge
answering garbage and a dead endpoint — and every failure is counted in the run's metrics, never fatal."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fake_chat_server import ChatServer
from polyfuse.config import load_pipeline
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digits_vqa_rlhf_http_judge.yaml"
PREFIX = "reward/feedback/http-judge/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def short_run(registry: Any, output_dir: Path, url: str, model: str) -> dict[str, float]:
    """The example for 1,024 steps with quick timeouts; the last logged value of each reward/ metric."""
    config = load_pipeline(EXAMPLE, registry)
    params = dict(config.reward.params)
    (judge,) = params["feedback"]
    params["feedback"] = [{**judge, "params": {**judge["params"], "url": url, "model": model, "timeout_s": 1.0,
                                               "retries": 1, "backoff_s": 0.01, "requests_per_minute": None}}]
    params.update(max_labels=64, initial_share=0.5)
    trainer = config.trainer.model_copy(update={"total_steps": 1024, "reward_update_every": 256, "eval_every": 1024,
                                                "eval_episodes": 16, "output_dir": output_dir})
    reward = config.reward.model_copy(update={"params": params})
    optimizer = config.optimizer.model_copy(update={"params": {**config.optimizer.params, "learning_starts": 256}})
    Trainer(config.model_copy(update={"trainer": trainer, "reward": reward, "optimizer": optimizer}), registry,
            progress=False).run()
    last: dict[str, float] = {}
    for record in read_metrics(output_dir / "metrics.jsonl"):
        last.update({key: value for key, value in record.items() if key.startswith("reward/")})
    return last


@pytest.fixture
def registry(make_registry: Any) -> Any:
    registry = make_registry()
    if "dqn" not in registry.names("optimizers") or "sbert" not in registry.names("encoders"):
        pytest.skip("the example trains with polyfuse-dqn and reads questions with polyfuse-sbert")
    return registry


def test_a_good_judge_labels_and_the_reward_model_trains(registry: Any, tmp_path: Path) -> None:
    with ChatServer() as server:
        metrics = short_run(registry, tmp_path, server.url, "judge")
    assert metrics[PREFIX + "source/answered"] > 0 and metrics["reward/labels"] > 0
    assert metrics[PREFIX + "source/malformed"] == 0 and "reward/loss" in metrics


@pytest.mark.parametrize("case", ["garbage", "dead endpoint"])
def test_a_bad_judge_is_counted_and_the_run_goes_on(case: str, registry: Any, tmp_path: Path) -> None:
    if case == "garbage":
        with ChatServer() as server:
            metrics = short_run(registry, tmp_path, server.url, "garbage")
        assert metrics[PREFIX + "source/malformed"] > 0
    else:
        metrics = short_run(registry, tmp_path, f"http://127.0.0.1:{free_port()}/v1/chat/completions", "judge")
        assert metrics[PREFIX + "source/connection_errors"] > 0
    assert metrics[PREFIX + "source/answered"] == 0 and metrics["reward/labels"] == 0
    assert metrics[PREFIX + "source/abstained"] > 0
    assert (tmp_path / "summary.json").is_file(), "the run finished"
