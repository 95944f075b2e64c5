"""Latency and throughput of ``polyfuse serve`` on loopback, against calling the policy in process.

Trains ``examples/digits_vqa_dqn.yaml`` (or reuses ``--run``), starts ``polyfuse serve`` in its own
process and, for 1, 8 and 32 concurrent clients (threads, each on its own keep-alive connection),
sends one held-out observation per request for ``--seconds``. The baseline calls the same loaded
policy (:class:`polyfuse.serving.model.ServedModel`) in this process: one observation per call, and
batches of 8 and 32 (what the server's batching can reach at best). Writes ``results.json`` and prints
the table of the README.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONCURRENCY = (1, 8, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-serving",
                        help="a trained DigitsVQA run (trained from examples/digits_vqa_dqn.yaml when it has no checkpoint)")
    parser.add_argument("--steps", type=int, default=40_000, help="training steps when training it")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--log-feedback", metavar="DB", help="the server logs every answer into this label store "
                        "(polyfuse serve --log-feedback; each request a one-step episode), to see what logging costs")
    parser.add_argument("--served-only", action="store_true", help="skip the in-process rows")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.run / "checkpoint").is_dir():
        subprocess.run([sys.executable, "-m", "polyfuse", "run", str(ROOT / "examples" / "digits_vqa_dqn.yaml"),
                        "--output-dir", str(args.run), "--steps", str(args.steps)], check=True)
    observations = held_out(256)
    rows = [] if args.served_only else [in_process(args.run, observations, batch, args.seconds)
                                        for batch in CONCURRENCY]
    rows += served(args.run, observations, args)
    results = {"run": str(args.run), "seconds": args.seconds, "max_batch": args.max_batch,
               "max_wait_ms": args.max_wait_ms, "log_feedback": args.log_feedback, "cpu_count": os.cpu_count(),
               "rows": rows}
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(rows))


def held_out(count: int) -> list[dict[str, Any]]:
    from polyfuse.envs import eval_kwargs, make_env

    env = make_env("polyfuse/DigitsVQA-v0", eval_kwargs("polyfuse/DigitsVQA-v0", {}))
    samples = []
    for seed in range(count):
        observation, _ = env.reset(seed=seed)
        samples.append({"image": observation["image"].tolist(), "question": str(observation["question"])})
    env.close()
    return samples


def in_process(run: Path, observations: list[dict[str, Any]], batch: int, seconds: float) -> dict[str, Any]:
    """The loaded policy called directly, ``batch`` observations per call, for ``seconds``."""
    import torch
    from polyfuse.observations import stack
    from polyfuse.registry import Registry
    from polyfuse.serving.model import ServedModel

    torch.set_num_threads(1)
    model = ServedModel(run, Registry.load())
    samples = [{"image": np.asarray(o["image"], dtype=np.uint8), "question": o["question"]} for o in observations]
    batches = [stack([samples[(i + j) % len(samples)] for j in range(batch)]) for i in range(0, len(samples), batch)]
    for part in batches[:3]:
        model(part)  # warm-up
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call = time.perf_counter()
        model(batches[len(latencies) % len(batches)])
        latencies.append(time.perf_counter() - call)
    elapsed = time.perf_counter() - started
    model.close()
    return summary(f"in process, {batch} per call", latencies, elapsed, batch)


def served(run: Path, observations: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging = ["--log-feedback", args.log_feedback] if args.log_feedback else []
    server = subprocess.Popen([sys.executable, "-m", "polyfuse", "serve", str(run), "--port", str(port),
                               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), *logging],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        bodies = [json.dumps({"observation": o}).encode() for o in observations]
        rows = []
        for clients in CONCURRENCY:
            before = batch_counts(port)
            row = load(port, bodies, clients, args.seconds, args.log_feedback)
            after = batch_counts(port)
            forward_passes = after[1] - before[1]
            row["mean_batch"] = (after[0] - before[0]) / forward_passes if forward_passes else None
            rows.append(row)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_ready(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("polyfuse serve exited before it was ready")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if json.loads(connection.getresponse().read())["status"] == "ready":
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("polyfuse serve did not become ready in 120 s")


def batch_counts(port: int) -> tuple[float, float]:
    """(observations batched, forward passes) so far, from /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return float(values["polyfuse_batch_size_sum"]), float(values["polyfuse_batch_size_count"])


def load(port: int, bodies: list[bytes], clients: int, seconds: float, logging_to: str | None) -> dict[str, Any]:
    """``clients`` threads each sending requests back to back on a keep-alive connection for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"content-type": "application/json"}
        for body in bodies[:2]:  # warm-up: the connection and the feature cache
            connection.request("POST", "/v1/act", body, headers)
            connection.getresponse().read()
        start.wait()
        n = index
        while time.perf_counter() < stop_at[0]:
            call = time.perf_counter()
            connection.request("POST", "/v1/act", bodies[n % len(bodies)], headers)
            response = connection.getresponse()
            response.read()
            latencies[index].append(time.perf_counter() - call)
            errors[index] += response.status != 200
            n += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at.append(time.perf_counter() + 1e9)
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if sum(errors):
        raise SystemExit(f"{sum(errors)} requests failed")
    return summary(f"served, {clients} concurrent client{'s' if clients > 1 else ''}"
                   + (", logging" if logging_to else ""),
                   [x for part in latencies for x in part], elapsed, 1)


def summary(name: str, latencies: list[float], elapsed: float, per_call: int) -> dict[str, Any]:
    values = np.asarray(latencies) * 1000
    return {"name": name, "calls": len(latencies), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)), "calls_per_s": len(latencies) / elapsed,
            "observations_per_s": len(latencies) * per_call / elapsed}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| how | calls | p50 | p99 | calls/s | observations/s | mean batch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        batch = f"{row['mean_batch']:.1f}" if row.get("mean_batch") is not None else ""
        lines.append(f"| {row['name']} | {row['calls']} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | "
                     f"{row['calls_per_s']:.0f} | {row['observations_per_s']:.0f} | {batch} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
