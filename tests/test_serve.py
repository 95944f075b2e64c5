"""``polyfuse serve``: the real server in its own process on a loopback port, a tiny trained DigitsVQA run as its model."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from polyfuse.config import validate_pipeline
from polyfuse.registry import Registry
from polyfuse.training.trainer import Trainer

# Trains a tiny run (about 10 s) and starts the server in its own process (torch and the sentence-transformer
# imported: about 20 s on 2 loaded cores), once for the module.
pytestmark = pytest.mark.slow

DIGITS = {
    "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
    "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
    "fuser": {"name": "concat", "params": {"output_dim": 32}},
    "optimizer": {"name": "ppo", "params": {"n_steps": 32, "activation": "relu"}},
    "trainer": {"total_steps": 512, "eval_every": 512, "eval_episodes": 16, "checkpoint_every": 512,
                "eval_modes": ["greedy"]},
}


class Server:
    """``polyfuse serve`` in its own process; everything it prints goes to ``log``."""

    def __init__(self, run: Path, *options: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = Path(tempfile.mkstemp(prefix="polyfuse-serve-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "polyfuse", "serve", str(run), "--port", str(self.port), *options],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.get("/health")["status"] == "ready":
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"polyfuse serve did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            body = response.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def post(self, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + "/v1/act", data=data, method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def declare_body(self, size: int) -> tuple[int, Any]:
        """The answer to a request that announces a body of ``size`` bytes (and sends none of it)."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest("POST", "/v1/act")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    config = {**DIGITS, "trainer": {**DIGITS["trainer"], "output_dir": str(folder)}}
    Trainer(validate_pipeline(config), progress=False).run()
    return folder


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[Server]:
    served = Server(run, "--max-batch", "16", "--max-wait-ms", "50")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def questions() -> list[dict[str, Any]]:
    """Held-out DigitsVQA observations (test images), as JSON."""
    from polyfuse.envs import eval_kwargs, make_env

    env = make_env("polyfuse/DigitsVQA-v0", eval_kwargs("polyfuse/DigitsVQA-v0", {}))
    samples = []
    for seed in range(40):
        observation, _ = env.reset(seed=seed)
        samples.append({"image": observation["image"].tolist(), "question": str(observation["question"])})
    env.close()
    return samples


@pytest.fixture(scope="module")
def in_process(run: Path, questions: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The saved policy's greedy actions and softmax probabilities, computed in this process."""
    import torch
    from polyfuse.observations import stack
    from polyfuse.training.saved_policy import load_saved_policy

    policy = load_saved_policy(run, Registry.load())
    try:
        batch = stack([{"image": np.asarray(q["image"], dtype=np.uint8), "question": q["question"]} for q in questions])
        actions = policy.optimizer.act(batch, deterministic=True)
        with torch.no_grad():
            probabilities = torch.softmax(policy.optimizer.action_logits(batch), dim=-1).numpy()
    finally:
        policy.close()
    return actions, probabilities


def png(image: list[Any]) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)[:, :, 0], mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_health_names_the_run(server: Server, run: Path) -> None:
    health = server.get("/health")
    assert health["status"] == "ready" and health["run"] == str(run) and health["step"] == 512
    assert health["observation_keys"] == ["image", "question"] and health["actions"] == 12
    assert health["action_names"][:3] == ["0", "1", "2"] and health["action_names"][-2:] == ["yes", "no"]


def test_act_matches_the_policy_in_process(server: Server, questions: list[dict[str, Any]],
                                           in_process: tuple[np.ndarray, np.ndarray]) -> None:
    actions, probabilities = in_process
    status, batch = server.post({"observations": questions})
    assert status == 200, batch
    assert batch["actions"] == actions.tolist()
    np.testing.assert_allclose(batch["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(batch["probabilities"], axis=1), 1.0, atol=1e-5)
    assert batch["action_names"] == [str(a) if a < 10 else ["yes", "no"][a - 10] for a in actions]
    status, one = server.post({"observation": questions[3]})
    assert status == 200 and one["action"] == actions[3] and one["action_name"] == batch["action_names"][3]
    assert one["step"] == 512 and len(one["probabilities"]) == 12
    status, as_png = server.post({"observation": {**questions[3], "image": png(questions[3]["image"])}})
    assert status == 200 and as_png["probabilities"] == one["probabilities"]


def test_concurrent_requests_are_batched_with_the_same_answers(
    server: Server, questions: list[dict[str, Any]], in_process: tuple[np.ndarray, np.ndarray]
) -> None:
    actions, probabilities = in_process
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda q: server.post({"observation": q}), questions * 2))
    assert all(status == 200 for status, _ in answers)
    assert [a["action"] for _, a in answers] == actions.tolist() * 2
    np.testing.assert_allclose([a["probabilities"] for _, a in answers], np.concatenate([probabilities] * 2),
                               rtol=1e-5, atol=1e-6)
    metrics = server.get("/metrics")
    biggest = int(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("polyfuse_batch_size_max")))
    assert 1 < biggest <= 40  # one request of 40 observations (above), others gathered up to --max-batch 16
    assert 'polyfuse_requests_total{status="200"}' in metrics
    assert 'polyfuse_request_latency_seconds{quantile="0.99"}' in metrics


JUNK: list[tuple[Any, str]] = [
    ([], "body"),
    ({"observation": {}, "observations": []}, "body"),
    ({"obs": {}}, "body"),
    ({"observations": []}, "observations"),
    ({"observations": {"image": 1}}, "observations"),
    ({"observation": "what digit is this?"}, "observation"),
    ({"observation": {"question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[0] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[0]] * 8] * 7, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[0]] * 8] * 7 + [[[0]] * 7], "question": "x"}}, "observation.image"),
    ({"observation": {"image": [[[256]] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[-1]] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[0.5]] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[["a"]] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[True]] * 8] * 8, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": "not base64!", "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": base64.b64encode(b"GIF89a junk").decode(), "question": "x"}}, "observation.image"),
    ({"observation": {"image": None, "question": "what digit is this?"}}, "observation.image"),
    ({"observation": {"image": [[[0]] * 8] * 8, "question": 7}}, "observation.question"),
    ({"observation": {"image": [[[0]] * 8] * 8, "question": ""}}, "observation.question"),
    ({"observation": {"image": [[[0]] * 8] * 8, "question": "x" * 65}}, "observation.question"),
    ({"observation": {"image": [[[0]] * 8] * 8, "question": "WHAT DIGIT?"}}, "observation.question"),
    ({"observation": {"image": [[[0]] * 8] * 8, "question": "what", "audio": [0.0]}}, "observation.audio"),
    ({"observations": [{"image": [[[0]] * 8] * 8, "question": "what"}, 3]}, "observations[1]"),
    ({"observations": [{"image": [[[0]] * 8] * 8, "question": "what"}] * 1025}, "observations"),
]


def test_client_mistakes_are_4xx_naming_the_field(server: Server) -> None:
    for body, field in JUNK:
        status, answer = server.post(body)
        assert 400 <= status < 500, (body, status, answer)
        assert answer["detail"]["field"] == field, (str(body)[:200], answer)
        assert answer["detail"]["problem"]
    status, answer = server.post(None, raw=b'{"observation": ')
    assert status == 400 and "not valid JSON" in answer["detail"]["problem"]
    status, answer = server.post(None, raw=b'{"observation": {"image": NaN}}')
    assert status == 400 and "NaN" in answer["detail"]["problem"]
    status, answer = server.post(None, raw=b"[" * 100_000)
    assert status == 400
    status, answer = server.declare_body(17 * 1024 * 1024)
    assert status == 413 and "larger than" in answer["detail"]["problem"]
    _, wrong_shape = server.post(JUNK[8][0])
    assert wrong_shape["detail"]["problem"] == "expected shape [8, 8, 1], got [7, 8, 1]"
    _, missing = server.post(JUNK[6][0])
    assert "missing" in missing["detail"]["problem"] and "uint8 array of shape [8, 8, 1]" in missing["detail"]["problem"]
    assert server.get("/health")["status"] == "ready"  # nothing above hurt the server
    metrics = server.get("/metrics")
    assert 'polyfuse_requests_total{status="422"}' in metrics and 'status="5' not in metrics


def test_serve_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "polyfuse", "serve", str(tmp_path / "nothing")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "error:" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly(server: Server, questions: list[dict[str, Any]]) -> None:
    """Last: it stops the module's server."""
    assert server.post({"observation": questions[0]})[0] == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert "polyfuse serve: stopped" in server.log.read_text()
