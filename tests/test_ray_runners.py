"""Env runners as Ray actors (env.vectorization: ray): config, training on a local instance, a killed runner, resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from polyfuse.config import validate_pipeline
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.training.metrics import read_metrics
from polyfuse.training.trainer import Trainer
from sampling_helpers import DIGITS, children, runner_config_data, train_digits_vqa_with_text, wait_gone

try:
    import ray
except ImportError:  # CI installs polyfuse[ray]; without it, the config tests still run
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'polyfuse[ray]')")


def config_data(output_dir: Path, **options: Any) -> dict[str, Any]:
    """DigitsVQA PPO on Ray runners (:func:`sampling_helpers.runner_config_data`'s options)."""
    return runner_config_data(output_dir, "ray", **options)


# --- config: no Ray needed ------------------------------------------------------------------------------------


def test_ray_settings_are_validated(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    config = validate_pipeline({**data, "env": {**data["env"], "ray": {"address": "auto"}}})
    assert config.env.ray.address == "auto" and config.env.ray.object_store_mb == 256
    with pytest.raises(ConfigError, match="ray applies to vectorization: ray only"):
        validate_pipeline({**data, "env": {"id": DIGITS, "ray": {"address": None}}})
    with pytest.raises(ConfigError, match="object_store_mb"):
        validate_pipeline({**data, "env": {**data["env"], "ray": {"object_store_mb": 10}}})
    with pytest.raises(ConfigError, match="exceeds num_envs"):
        validate_pipeline({**data, "env": {**data["env"], "workers": 9}})


def test_a_bad_cluster_address_is_refused_at_once(tmp_path: Path) -> None:
    from polyfuse.config import RayConfig
    from polyfuse.sampling.ray_sampler import start_ray

    data = config_data(tmp_path)
    with pytest.raises(ConfigError, match="'headnode' is not a Ray cluster's address"):
        validate_pipeline({**data, "env": {**data["env"], "ray": {"address": "headnode"}}})

    class RayThatRetriesForMinutes:
        def init(self, **kwargs: Any) -> None:
            raise AssertionError(f"ray.init({kwargs['address']!r}) called with nothing listening there")

    with socket.socket() as bound_not_listening:  # its port refuses connections while it stays bound
        bound_not_listening.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{bound_not_listening.getsockname()[1]}"
        with pytest.raises(PolyfuseError, match=f"nothing answers at {address} .*ray start --head"):
            start_ray(RayThatRetriesForMinutes(), RayConfig(address=address), num_cpus=1)


def test_a_local_instance_s_files_fit_rays_socket_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    from polyfuse.sampling.ray_sampler import local_temp_dir

    monkeypatch.setattr(tempfile, "tempdir", "/scratch/tmp")
    assert local_temp_dir() == f"/scratch/tmp/polyfuse-ray-{os.getuid()}"  # the system temp folder, when short
    monkeypatch.setattr(tempfile, "tempdir", "/var/folders/zz/zyxvpxvq6csfxvn_n0000000000000/T")  # macOS's
    socket = os.path.join(local_temp_dir(), "session_2026-12-02_06-10-29_229116_1234567/sockets/plasma_store")
    assert len(socket) <= 107, f"ray.init: AF_UNIX path length cannot exceed 107 bytes: {socket}"


def test_nproc_splits_the_runners_and_refuses_workers_that_do_not_divide(tmp_path: Path) -> None:
    from polyfuse.training.distributed import check_distributable, rank_share

    config = validate_pipeline(config_data(tmp_path, workers=4))
    check_distributable(config, 2, "env")
    share = rank_share(config, 2)
    assert (share.env.workers, share.env.num_envs) == (2, 4)  # each rank: half the runners, half the environments
    with pytest.raises(PolyfuseError, match=r"--nproc 2: env.workers \(3\) is the total .* multiple of 2"):
        check_distributable(validate_pipeline(config_data(tmp_path, workers=3)), 2, "env")


@needs_ray
def test_a_rank_torchrun_started_refuses_workers_that_do_not_divide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from polyfuse.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config_data(tmp_path / "run", workers=3)), encoding="utf-8")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 starts each rank
    assert main(["run", str(path)]) == 2
    assert "env.workers (3) is the total" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ranks_on_several_machines_need_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from polyfuse.sampling.ray_group import check_one_machine
    from polyfuse.training.distributed import Ranks

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's: the ranks on this machine
    check_one_machine(Ranks(1, 2))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with pytest.raises(PolyfuseError, match="1 of the 2 ranks run on other machines.*set env.ray.address"):
        check_one_machine(Ranks(0, 2))


def test_without_ray_the_run_names_the_extra_to_install(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config_data(tmp_path / "run")), encoding="utf-8")
    script = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
              "from polyfuse.cli import main; sys.exit(main(['run', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", script, str(path)], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr and "pip install 'polyfuse[ray]'" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# --- on a local Ray instance ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Any:
    """One local instance for the module's in-process runs (runners and their replacements: 3 CPUs)."""
    from polyfuse.config import RayConfig
    from polyfuse.sampling.ray_sampler import start_ray

    def stop_after_this_iteration(signum: int, frame: Any) -> None:  # stands for the trainer's handler
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, stop_after_this_iteration)
    try:
        start_ray(ray, RayConfig(), num_cpus=3)
        assert signal.getsignal(signal.SIGTERM) is stop_after_this_iteration  # Ray's own handler is undone
    finally:
        signal.signal(signal.SIGTERM, previous)
    yield ray
    ray.shutdown()


@needs_ray
@pytest.mark.slow  # 4096 steps of real training; the learner and two actors each load a sentence-transformer
def test_two_runners_train_digits_vqa_with_text(local_ray: Any, tmp_path: Path) -> None:
    train = train_digits_vqa_with_text(tmp_path, "ray")
    assert {r["optimizer/runners_replaced"] for r in train} == {0.0}


@needs_ray
def test_a_killed_runner_or_a_lost_rollout_is_replaced_and_the_run_finishes(local_ray: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    from polyfuse.sampling.ray_sampler import RaySampler

    rollouts, get = RaySampler._rollouts, RaySampler._get
    calls, lost = [], []

    def kill_runner_1_at_the_third_rollout(sampler: RaySampler) -> list[dict[str, Any]]:
        calls.append(sampler.published)
        if len(calls) == 3:
            ray.kill(sampler.actors[1], no_restart=True)
        return rollouts(sampler)

    def lose_runner_0s_fifth_rollout(sampler: RaySampler, index: int, reference: Any) -> Any:
        if len(calls) == 5 and index == 0 and not lost:  # as when its node dies with the rollout stored there
            lost.append(reference)
            raise ray.exceptions.ObjectLostError(reference.hex(), None, "")
        return get(sampler, index, reference)

    monkeypatch.setattr(RaySampler, "_rollouts", kill_runner_1_at_the_third_rollout)
    monkeypatch.setattr(RaySampler, "_get", lose_runner_0s_fifth_rollout)
    summary = Trainer(validate_pipeline(config_data(tmp_path, total_steps=1024)), progress=False).run()
    assert summary["steps"] == 1024 and summary["episodes"] == 1024  # DigitsVQA: one step per episode
    err = capfd.readouterr().err
    assert "ray sampler: runner 1 died" in err
    assert "ray sampler: runner 0 died (Failed to retrieve object" in err
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["optimizer/runners_replaced"] == 2.0
    assert {r["optimizer/policy_lag"] for r in train[1:]} == {1.0}  # the re-collected rollout has the same version


@needs_ray
def test_sigkill_then_resume_continues_from_the_checkpoint(local_ray: Any, tmp_path: Path) -> None:
    data = config_data(tmp_path / "run", total_steps=400_000, checkpoint_every=512)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:  # its own local Ray instance, as `polyfuse run` starts one
        process = subprocess.Popen([sys.executable, "-m", "polyfuse", "run", str(path)], stderr=stderr_file)
    try:
        checkpoint = tmp_path / "run" / "checkpoint"
        deadline = time.monotonic() + 180
        while not checkpoint.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)  # past the first checkpoint (its files are renamed into place whole)
        ray_processes = children(process.pid)  # the local instance: GCS, raylet, ... (the runners are the raylet's)
        assert len(ray_processes) >= 2
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert wait_gone(ray_processes) == []  # Ray's processes share the killed run's fate: nothing left running
    saved = json.loads((checkpoint / "checkpoint.json").read_text())["state"]["trainer"]["steps"]
    assert saved >= 512
    resumed = validate_pipeline({**data, "trainer": {**data["trainer"], "total_steps": saved + 256}})
    summary = Trainer(resumed, resume=True, progress=False).run()
    assert summary["steps"] >= saved + 256
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["step"] >= saved + 256


# --- --nproc: a data-parallel learner, each rank with its own runners -------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (that still runs)."""
    found, stack = [], [pid]
    while stack:
        try:
            below = children(stack.pop())
        except FileNotFoundError:  # gone meanwhile
            continue
        found += below
        stack += below
    return found


def named(pids: list[int], word: bytes) -> list[int]:
    """Those of ``pids`` whose command (a Ray worker's is its process title, ray::CLASS) contains ``word``."""
    matching = []
    for pid in pids:
        try:
            if word in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                matching.append(pid)
        except FileNotFoundError:
            pass
    return matching


def train_lines(metrics: Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(metrics) if r["kind"] == "train"] if metrics.exists() else []


@needs_ray
@pytest.mark.slow  # two launches of 2 ranks, each with a Ray runner: 104 s on the 2-core VM at load average 3
def test_two_ranks_share_one_local_instance_replace_their_runners_and_resume(tmp_path: Path) -> None:
    """--nproc 2 with 2 runners: one Ray instance (rank 0's), one runner per rank; both runners killed and
    replaced (metrics count both ranks'), SIGTERM saves a checkpoint, --resume finishes; nothing left running."""
    data = config_data(tmp_path / "run", total_steps=400_000, checkpoint_every=512, eval_episodes=200)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    metrics, log = tmp_path / "run" / "metrics.jsonl", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "polyfuse", "run", str(path), "--nproc", "2"]
    with log.open("w") as stderr_file:
        launcher = subprocess.Popen(command, stderr=stderr_file, start_new_session=True)
    seen: set[int] = set()
    instances: set[int] = set()
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not any(r["optimizer/runners_replaced"] == 2.0 for r in train_lines(metrics)):
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            processes = descendants(launcher.pid)
            seen.update(processes)
            instances.update(named(processes, b"gcs_server"))
            runners = named(processes, b"ray::RayRunner")
            if not killed and len(runners) == 2 and train_lines(metrics):  # both ranks train: kill their runners
                for runner in runners:
                    os.kill(runner, signal.SIGKILL)
                killed = runners
            time.sleep(0.2)
        assert len(instances) == 1  # rank 0's local instance, which rank 1 joined
        launcher.send_signal(signal.SIGTERM)  # the ranks stop after this iteration and save
        assert launcher.wait(timeout=120) == 143, log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert wait_gone(list(seen)) == []  # the ranks left in order: no Ray process (and no rank) left behind
    err = log.read_text()
    assert "ray sampler (rank 0): runner 0 died" in err and "ray sampler (rank 1): runner 0 died" in err, err[-3000:]
    saved = json.loads((tmp_path / "run" / "checkpoint" / "checkpoint.json").read_text())["state"]["trainer"]["steps"]
    resumed = subprocess.run([*command, "--resume", "--steps", str(saved + 512), "--json"], capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["steps"] >= saved + 512
    assert summary["episodes"] == summary["steps"]  # one-step episodes: both ranks' episodes counted
    records = read_metrics(metrics)
    evals = [r["eval/success"] for r in records if r["kind"] == "eval"]
    assert evals[0] < 0.2 and summary["eval"]["success"] > 0.3  # untrained about 0.1: the ranks learnt together
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == summary["steps"]
