"""A policy with memory served (the app in this process, the real model) and exported: each client episode
is continued from what the policy remembers of it, as the training path unrolls it.

The run is WordRecall (a cue, two waits, "go": only a memory knows which action pays), cloned from its
expert to 100%, so the action at "go" tells whether the answer remembered the episode's own cue.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from asgi_helpers import request, serving  # noqa: E402
from polyfuse.cli import main  # noqa: E402
from polyfuse.config import validate_pipeline  # noqa: E402
from polyfuse.observations import stack  # noqa: E402
from polyfuse.registry import Registry  # noqa: E402
from polyfuse.rl.testing import RECALL_ID, WordBandit, WordRecall  # noqa: E402
from polyfuse.serving.app import create_app  # noqa: E402
from polyfuse.serving.model import ServedModel  # noqa: E402
from polyfuse.training.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.slow  # trains a 128-step run after cloning 300 episodes: about 15 s

MEMORY = 16
RECALL = {
    "env": {"id": f"polyfuse.rl.testing:{RECALL_ID}", "num_envs": 8, "kwargs": {"delay": 2}},
    "modalities": {"vector": {"encoder": "flatten"}, "text": {"encoder": "sbert"}},
    "fuser": {"name": "concat", "params": {"output_dim": 16}},
    "optimizer": {"name": "ppo", "params": {"memory": MEMORY, "sequence_length": 4, "n_steps": 16,
                                            "hidden_sizes": [16]}},
    "trainer": {"total_steps": 128, "eval_every": 128, "eval_episodes": 16, "checkpoint_every": 128,
                "eval_modes": ["greedy"],
                "warm_start": {"episodes": 300, "epochs": 30, "batch_size": 32, "learning_rate": 0.01}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recall")
    Trainer(validate_pipeline({**RECALL, "trainer": {**RECALL["trainer"], "output_dir": str(folder)}}),
            progress=False).run()
    return folder


@pytest.fixture
def served(run: Path) -> Iterator[ServedModel]:
    """The run's policy, served with no episode remembered yet."""
    model = ServedModel(run, Registry.load())
    yield model
    model.close()


def episode(cue: int) -> list[dict[str, Any]]:
    """The four observations of a WordRecall episode whose cue is ``cue``: the cue, two waits, "go"."""
    env = WordRecall(delay=2)
    observation, info = next((o, i) for o, i in (env.reset(seed=s) for s in range(100)) if i["expert_action"] == cue)
    observations = [observation]
    for _ in range(3):
        observations.append(env.step(0)[0])
    assert [o["text"] for o in observations] == [f"go {WordBandit.WORDS[cue]}", "wait", "wait", "go"]
    return observations


def as_json(observation: dict[str, Any]) -> dict[str, Any]:
    return {"vector": observation["vector"].tolist(), "text": observation["text"]}


def unrolled_probabilities(run: Path, episodes: list[list[dict[str, Any]]]) -> np.ndarray:
    """Action probabilities ``(steps, episodes, n)`` through the training path (``sequence_logits``)."""
    from polyfuse.training.saved_policy import load_saved_policy

    policy = load_saved_policy(run, Registry.load())
    try:
        rows = stack([steps[t] for t in range(len(episodes[0])) for steps in episodes])  # time-major
        starts = torch.zeros(len(episodes[0]), len(episodes), dtype=torch.bool)
        starts[0] = True
        with torch.no_grad():
            logits = policy.optimizer.sequence_logits(rows, starts)
        return torch.softmax(logits, -1).numpy().reshape(len(episodes[0]), len(episodes), -1)
    finally:
        policy.close()


def act(body: dict[str, Any]) -> tuple[str, str, bytes]:
    return "POST", "/v1/act", json.dumps(body).encode()


def exchange(model: ServedModel, calls: list[tuple[str, str, bytes]]) -> list[tuple[int, Any]]:
    """Each call through a fresh app over ``model``, in order; statuses and JSON answers (text for /metrics)."""

    async def exchanges(app: Any) -> list[tuple[int, Any]]:
        answers = []
        for method, path, body in calls:
            status, raw = await request(app, method, path, body)
            answers.append((status, raw.decode() if path == "/metrics" else json.loads(raw)))
        return answers

    return asyncio.run(serving(create_app(model), exchanges))


def test_each_client_episode_continues_from_its_own_memory(run: Path, served: ServedModel) -> None:
    left, right = episode(0), episode(1)
    answers = exchange(served, [act({"observations": [as_json(left[t]), as_json(right[t])], "episodes": ["L", "R"]})
                                for t in range(4)]
                       + [act({"observation": as_json(left[3]), "episode": "fresh"})])
    assert all(status == 200 for status, _ in answers), answers
    steps = [answer for _, answer in answers[:4]]
    assert [s["memory_steps"] for s in steps] == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert steps[3]["actions"] == [0, 1]  # at "go", each episode's own cue
    expected = unrolled_probabilities(run, [left, right])
    np.testing.assert_allclose([s["probabilities"] for s in steps], expected, rtol=1e-4, atol=1e-5)
    fresh = answers[4][1]  # "go" with nothing remembered: not the answer an episode that saw its cue gets
    assert fresh["memory_steps"] == 0
    assert not np.allclose(fresh["probabilities"], steps[3]["probabilities"][0], atol=1e-3)


def test_two_steps_of_one_episode_in_one_batch_are_answered_in_order(served: ServedModel) -> None:
    right = episode(1)
    together = act({"observations": [as_json(o) for o in right], "episodes": ["E"] * 4})
    one_by_one = [act({"observation": as_json(o), "episode": "F"}) for o in right]
    answers = exchange(served, [together, *one_by_one])
    batched, alone = answers[0][1], [answer for _, answer in answers[1:]]
    assert batched["memory_steps"] == [0, 1, 2, 3] and batched["actions"][3] == 1
    np.testing.assert_allclose(batched["probabilities"], [a["probabilities"] for a in alone], rtol=1e-5, atol=1e-6)


def test_episodes_are_required_and_a_done_outcome_forgets_one(served: ServedModel) -> None:
    left = episode(0)
    answers = exchange(served, [
        act({"observation": as_json(left[0])}),
        act({"observations": [as_json(left[0])] * 2, "episodes": ["A", None]}),
        ("GET", "/health", b""),
        act({"observation": as_json(left[0]), "episode": "A"}),
        ("GET", "/metrics", b""),
        ("POST", "/v1/outcome", json.dumps({"episode": "A", "reward": 1.0}).encode()),
        ("POST", "/v1/outcome", json.dumps({"episode": "A", "done": True}).encode()),
        ("POST", "/v1/outcome", json.dumps({"episode": "A", "done": True}).encode()),
        act({"observation": as_json(left[1]), "episode": "A"}),
        ("GET", "/metrics", b""),
    ])
    (missing, one), (unnamed, other) = answers[0], answers[1]
    assert missing == 422 and one["detail"]["field"] == "episode"
    assert "has a memory (optimizer.params.memory: 16)" in one["detail"]["problem"]
    assert unnamed == 422 and other["detail"]["field"] == "episodes[1]"
    assert answers[2][1]["memory"] == MEMORY
    assert answers[3][1]["memory_steps"] == 0
    assert "polyfuse_episode_memories 1" in answers[4][1]
    assert answers[5][0] == 200 and answers[6][0] == 200  # a reward alone keeps the episode; done ends it
    assert answers[7][0] == 404 and answers[7][1]["detail"]["field"] == "episode"
    assert answers[8][1]["memory_steps"] == 0  # forgotten: the next step starts a new episode
    assert "polyfuse_episode_memories 1" in answers[9][1]


def sentence_features(run: Path, texts: list[str]) -> Any:
    """What the run's frozen text encoder gives ``texts``, as a function of a batch's texts (the exported model
    takes text features, not strings)."""
    from polyfuse.network import MultimodalNetwork
    from polyfuse.training.saved_policy import load_saved_policy

    policy = load_saved_policy(run, Registry.load())
    try:
        network = next(m for m in policy.optimizer.model.modules() if isinstance(m, MultimodalNetwork))
        with torch.no_grad():
            features = dict(zip(texts, network.encoders["text"](tuple(texts)).float().numpy()))
    finally:
        policy.close()
    return lambda batch: np.stack([features[text] for text in batch])


def exported_episodes(model: Any, inputs: list[str], episodes: list[list[dict[str, Any]]],
                      text_features: Any) -> np.ndarray:
    """Probabilities ``(steps, episodes, n)`` from an exported model, feeding ``next_memory`` back each step."""
    memory = np.zeros((len(episodes), MEMORY), np.float32)
    answered = []
    for t in range(len(episodes[0])):
        batch = stack([steps[t] for steps in episodes])
        feeds = {"vector": batch["vector"], "text_features": text_features(batch["text"]), "memory": memory}
        _, probabilities, memory = model([feeds[name] for name in inputs])
        answered.append(np.asarray(probabilities))
        memory = np.asarray(memory)
    return np.stack(answered)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_policy_with_memory_takes_and_gives_the_memory(
    fmt: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if fmt == "onnx" and missing:
        pytest.skip(f"ONNX export needs {', '.join(missing)}: pip install 'polyfuse[onnx]'")
    target = tmp_path / f"policy.{fmt}"
    assert main(["export", str(run), "--format", fmt, "-o", str(target)]) == 0
    assert f"memory (B, {MEMORY}) float32" in capsys.readouterr().out
    description = json.loads(Path(f"{target}.json").read_text())
    inputs = [i["name"] for i in description["inputs"]]
    assert inputs == ["vector", "text_features", "memory"]
    assert description["outputs"] == ["logits", "probabilities", "next_memory"]
    text_features = sentence_features(run, [*{o["text"] for o in episode(0) + episode(1)}])
    if fmt == "torchscript":
        loaded = torch.jit.load(str(target))

        def model(feeds: list[np.ndarray]) -> Any:
            with torch.no_grad():
                return [t.numpy() for t in loaded(*[torch.from_numpy(np.ascontiguousarray(f)) for f in feeds])]
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])

        def model(feeds: list[np.ndarray]) -> Any:
            return session.run(None, dict(zip(inputs, feeds)))
    left, right = episode(0), episode(1)
    answered = exported_episodes(model, inputs, [left, right, left], text_features)  # 3 rows: not the traced batch
    assert answered[3].argmax(-1).tolist() == [0, 1, 0]
    np.testing.assert_allclose(answered, unrolled_probabilities(run, [left, right, left]), rtol=1e-4, atol=1e-5)
