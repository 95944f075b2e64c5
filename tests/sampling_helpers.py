"""What the env-runner tests share (test_pipelined_sampling.py, test_ray_runners.py): a short DigitsVQA run's
config, and checks on the processes a run leaves behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DIGITS = "polyfuse/DigitsVQA-v0"


def runner_config_data(output_dir: Path, vectorization: str, *, text: bool = False, optimizer: str = "ppo",
                       workers: int = 2, **trainer: Any) -> dict[str, Any]:
    """DigitsVQA sampled by ``workers`` runners; without ``text`` the network reads the image alone (no
    sentence-transformer to load)."""
    modalities: dict[str, Any] = {"image": {"encoder": "flatten"}}
    if text:
        modalities["question"] = {"encoder": "sbert"}
    params: dict[str, Any] = {"n_steps": 16, "hidden_sizes": [64], "activation": "relu"}
    if optimizer == "ppo":
        params.update(n_epochs=4, batch_size=64)
    return {
        "env": {"id": DIGITS, "num_envs": 8, "vectorization": vectorization, "workers": workers},
        "modalities": modalities,
        "fuser": "concat",
        "optimizer": {"name": optimizer, "params": params},
        "trainer": {"total_steps": 1024, "eval_every": 100_000, "eval_episodes": 50,
                    "checkpoint_every": 100_000, "output_dir": str(output_dir), **trainer},
    }


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The processes of ``pids`` still running after up to ``timeout`` s (generous: CI's cores are loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def train_digits_vqa_with_text(output_dir: Path, vectorization: str) -> list[dict[str, Any]]:
    """Train 4096 steps of PPO with text observations on 2 runners, check it learnt with the policy one update
    old, and return the run's train records."""
    from polyfuse.config import validate_pipeline
    from polyfuse.training.metrics import read_metrics
    from polyfuse.training.trainer import Trainer

    run = validate_pipeline(runner_config_data(output_dir, vectorization, text=True, total_steps=4096,
                                               eval_every=4096, eval_episodes=200))
    summary = Trainer(run, progress=False).run()
    records = read_metrics(output_dir / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 4096]
    assert evals[0]["eval/success"] < 0.15  # the untrained policy
    assert summary["eval"]["greedy"]["success"] > 0.3
    train = [r for r in records if r["kind"] == "train"]
    assert {r["optimizer/policy_lag"] for r in train[1:]} == {1.0}
    assert summary["episodes"] == 4096
    return train
