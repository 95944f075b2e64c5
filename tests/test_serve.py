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
import threading
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

    def post(self, body: Any, raw: bytes | None = None, path: str = "/v1/act") -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
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
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second run of the same pipeline, shorter (saved at step 256): what a retraining would promote."""
    folder = tmp_path_factory.mktemp("candidate")
    trainer = {**DIGITS["trainer"], "output_dir": str(folder), "total_steps": 256, "eval_every": 256,
               "checkpoint_every": 256}
    Trainer(validate_pipeline({**DIGITS, "trainer": trainer}), progress=False).run()
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


def test_a_port_in_use_is_a_clear_error(run: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "polyfuse", "serve", str(run), "--port", str(port)],
                                check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: is the port in use?" in result.stderr


def test_a_promotion_is_swapped_in_under_load_without_a_failed_request(
    run: Path, candidate: Path, questions: list[dict[str, Any]]
) -> None:
    from polyfuse.training.promotion import POINTER_FILE, Promotion, write_promotion
    from polyfuse.training.saved_policy import checkpoint_folder

    served = Server(run, "--reload-interval", "0.2")
    stop, answers = threading.Event(), [[] for _ in range(4)]

    def client(seen: list[tuple[int, Any]]) -> None:
        while not stop.is_set():
            seen.append(served.post({"observation": questions[len(seen) % len(questions)]}))

    def wait_for(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 90
        while not condition():
            assert time.monotonic() < deadline, f"{what}:\n{served.log.read_text()}"
            time.sleep(0.05)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            clients = [pool.submit(client, seen) for seen in answers]
            wait_for(lambda: min(map(len, answers)) >= 5, "no answers")
            write_promotion(run, Promotion(checkpoint_folder(candidate), 256))
            wait_for(lambda: served.get("/health")["step"] == 256, "the promotion was not picked up")
            counts = [len(seen) for seen in answers]
            wait_for(lambda: all(len(seen) >= n + 5 for seen, n in zip(answers, counts)), "no answers after")
            stop.set()
            for running in clients:
                running.result()
        assert all(status == 200 for seen in answers for status, _ in seen)
        for seen in answers:  # each client saw the old step, then the new one, and never the old one again
            steps = [answer["step"] for _, answer in seen]
            assert steps[0] == 512 and steps[-1] == 256 and steps == sorted(steps, reverse=True)
        health = served.get("/health")
        assert health["checkpoint"] == str(checkpoint_folder(candidate)) and health["follows_promotions"] == str(run)
        metrics = served.get("/metrics")
        assert "polyfuse_reloads_total 1" in metrics and "polyfuse_reloads_refused_total 0" in metrics

        (run / POINTER_FILE).write_text("{half a pointer")
        wait_for(lambda: "polyfuse_reloads_refused_total 1" in served.get("/metrics"), "no refusal")
        status, answer = served.post({"observation": questions[0]})
        assert status == 200 and answer["step"] == 256
        assert "reload refused:" in served.log.read_text() and "is damaged" in served.log.read_text()
    finally:
        served.stop()
        (run / POINTER_FILE).unlink(missing_ok=True)


def test_answered_episodes_are_logged_into_the_feedback_store_and_flushed_on_sigterm(
    run: Path, questions: list[dict[str, Any]], tmp_path: Path
) -> None:
    pytest.importorskip("polyfuse_feedback")
    from polyfuse_feedback.store import LabelStore

    db = tmp_path / "served.sqlite"
    served = Server(run, "--log-feedback", str(db), "--query-share", "0.5", "--query-source", "synthetic",
                    "--max-wait-ms", "0")
    try:
        for i in range(10):  # one-step episodes whose client reports the reward: right or wrong
            status, answer = served.post({"observation": questions[i], "episode": f"q{i}"})
            assert status == 200
            assert served.post({"episode": f"q{i}", "reward": float(answer["action"] == i % 12), "done": True},
                               path="/v1/outcome")[0] == 200
        assert served.post({"observations": questions[10:14], "episodes": ["long", None, "long", None]})[0] == 200
        assert served.post({"episode": "long", "reward": 0.5}, path="/v1/outcome")[0] == 200
        status, answer = served.post({"episode": "q0", "done": True}, path="/v1/outcome")
        assert status == 404 and answer["detail"]["field"] == "episode"  # ended already
        status, answer = served.post({"episode": "q1", "reward": "good"}, path="/v1/outcome")
        assert status == 422 and answer["detail"]["field"] == "reward"
        client = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "examples" / "serve_simulated_client.py"),
                                 "--url", served.url, "--episodes", "3"], check=True, capture_output=True, text=True,
                                timeout=120)
        assert "3 episodes of polyfuse/DigitsVQA-v0: mean return" in client.stdout
        assert "steps answered: 3 by the model of step 512" in client.stdout
        metrics = served.get("/metrics")  # the one-step episodes are written within a second
        assert "polyfuse_episode_writes_failed_total 0" in metrics and "polyfuse_episodes_logged_total" in metrics
        served.process.send_signal(signal.SIGTERM)  # "long" is still open: written as truncated at shutdown
        assert served.process.wait(timeout=60) == 0, served.log.read_text()
    finally:
        served.stop()
    with LabelStore(f"sqlite:///{db}") as store:
        (project,) = store.projects()
        assert project.name == f"served-{run.name}" and project.segments == 16
        segments = store.segments(list(range(1, 17)))
        queries = store.pending(project.name, source="synthetic")
        display = store.project_settings(project.name).display  # how the annotation app shows them
    assert display["env"] == "polyfuse/DigitsVQA-v0" and display["actions"][-1] == "no"
    assert display["observations"] == {"image": "image", "question": "text"}
    one_step = [s for s in segments if s.terminated]
    assert len(one_step) == 13 and all(len(s) == 1 and np.isfinite(s.env_rewards).all() for s in one_step)
    long = next(s for s in segments if s.truncated)
    assert len(long) == 2 and np.isnan(long.env_rewards[0]) and long.env_rewards[1] == 0.5
    assert long.infos == [{"policy_step": 512}] * 2
    assert long.observations["question"] == (questions[10]["question"], questions[12]["question"])
    assert sum(len(s) == 1 and np.isnan(s.env_rewards).all() for s in segments) == 2  # sent without an id
    assert 0 < len(queries) < 16 and all(q.second is None and q.scale == 2 for q in queries)


def test_logging_needs_the_feedback_plugin_and_outcomes_need_logging(
    run: Path, server: Server, tmp_path: Path
) -> None:
    status, answer = server.post({"episode": "e", "done": True}, path="/v1/outcome")
    assert status == 409 and "--log-feedback" in answer["detail"]["problem"]
    without_plugin = ("import sys; sys.modules['polyfuse_feedback.served'] = None; from polyfuse.cli import main; "
                      f"sys.exit(main(['serve', {str(run)!r}, '--log-feedback', {str(tmp_path / 'x.sqlite')!r}]))")
    result = subprocess.run([sys.executable, "-c", without_plugin], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: --log-feedback needs polyfuse-feedback" in result.stderr and "pip install polyfuse-feedback" in result.stderr


def test_an_rlhf_run_answers_with_its_reward_models_score(questions: list[dict[str, Any]], tmp_path: Path) -> None:
    """The reward network is loaded to score only: its label store is not touched, nobody is asked."""
    pytest.importorskip("polyfuse_feedback")
    from polyfuse.rewards import Segment
    from polyfuse_feedback.judges.configs import ModelJudgeConfig
    from polyfuse_feedback.judges.model_judge import ModelJudge

    rlhf = {**DIGITS, "reward": {"name": "preference-model", "params": {
        "max_labels": 100, "gradient_steps": 5, "schedule": "constant", "initial_share": 0.5, "ensemble_size": 3,
        "feedback": {"name": "synthetic"}}},
        "trainer": {**DIGITS["trainer"], "reward_update_every": 64, "output_dir": str(tmp_path / "rlhf")}}
    Trainer(validate_pipeline(rlhf), progress=False).run()
    store = tmp_path / "rlhf" / "feedback.sqlite"
    before = store.stat().st_mtime_ns
    batch = questions[:8]
    served = Server(tmp_path / "rlhf")
    try:
        status, answer = served.post({"observations": batch})
        assert status == 200, answer
        status, one = served.post({"observation": batch[2]})
        assert status == 200 and one["reward"] == pytest.approx(answer["rewards"][2], rel=1e-5)
        assert one["reward_spread"] == pytest.approx(answer["reward_spreads"][2], rel=1e-4, abs=1e-6)
        assert served.get("/health")["reward"] == "preference-model"
    finally:
        served.stop()
    assert store.stat().st_mtime_ns == before
    judge = ModelJudge.from_saved(ModelJudgeConfig(reward_model=str(tmp_path / "rlhf")))  # another way to load it
    segments = [Segment({"image": np.asarray([q["image"]], np.uint8), "question": (q["question"],)},
                        np.array([action]), np.zeros(1, np.float32), [{}], True, False, 0)
                for q, action in zip(batch, answer["actions"])]
    returns = judge.model.predict_returns(segments)
    np.testing.assert_allclose(answer["rewards"], returns.mean(0) / judge.model.std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(answer["reward_spreads"], returns.std(0) / judge.model.std, rtol=1e-4, atol=1e-5)
    assert len(set(answer["rewards"])) > 1  # a trained model, not a constant


def test_an_env_reward_run_answers_without_a_reward(server: Server, questions: list[dict[str, Any]]) -> None:
    status, answer = server.post({"observation": questions[0]})
    assert status == 200 and "reward" not in answer and server.get("/health")["reward"] is None


def test_sigterm_stops_the_server_cleanly(server: Server, questions: list[dict[str, Any]]) -> None:
    """Last: it stops the module's server."""
    assert server.post({"observation": questions[0]})[0] == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert "polyfuse serve: stopped" in server.log.read_text()
