"""Latency of the annotation app under 32 concurrent annotators: fetch a query, submit a label.

Starts `polyfuse feedback serve` in its own process on loopback over a fresh label store (the SQLite
default, and a throwaway PostgreSQL server when Debian's postgresql is installed), fills a project
with comparison queries of DigitsVQA-sized segments, and runs N annotators, each on its own keep-alive
connection in one of several client processes, doing fetch-then-submit cycles for a fixed time.
Prints p50 / p99 latency of each request kind and requests per second, per backend.

    .venv/bin/python benchmarks/feedback_app_latency/run.py                 # 32 annotators, 20 s per backend
    .venv/bin/python benchmarks/feedback_app_latency/run.py --seconds 5 --backends sqlite
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins/polyfuse-feedback/tests"))  # the tests' HTTP client and segments

from app_clients import Annotator, free_port, kill, start_server  # noqa: E402
from test_store import make_segment  # noqa: E402


def prepare(database_url: str, annotators: int, queries: int) -> list[str]:
    from polyfuse_feedback.access import issue_token
    from polyfuse_feedback.store import LabelStore, NewQuery

    with LabelStore(database_url) as store:
        ids = store.add_segments("run", [make_segment(s % 7, length=1) for s in range(queries + 1)])
        store.post_queries("run", [NewQuery(ids[i], ids[i + 1], priority=float(i % 13), source="human")
                                   for i in range(queries)])
        return [issue_token(store, f"annotator{n}", project="run") for n in range(annotators)]


def client_process(port: int, tokens: list[str], seconds: float, think_s: float, results: multiprocessing.Queue) -> None:
    people = [Annotator(port, token, retry_for_s=0, think_s=think_s) for token in tokens]
    for person in people:  # warm up: connect, and the server's first render, before anything is timed
        person.cycle()
        person.timings = {"next": [], "submit": []}
    stop = time.monotonic() + seconds

    def work(person: Annotator) -> None:
        time.sleep(random.uniform(0, think_s))  # people do not all answer in the same millisecond
        while time.monotonic() < stop and person.cycle():
            pass

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({kind: [t for p in people for t in p.timings[kind]] for kind in ("next", "submit")})


def measure(database_url: str, annotators: int, seconds: float, processes: int, think_s: float,
            workers: int) -> dict[str, float]:
    tokens = prepare(database_url, annotators, queries=int(annotators * seconds * 40))
    port = free_port()
    server = start_server(database_url, port, "--workers", str(workers))
    try:
        results: multiprocessing.Queue = multiprocessing.Queue()
        groups = [tokens[i::processes] for i in range(processes)]
        workers = [multiprocessing.Process(target=client_process, args=(port, group, seconds, think_s, results))
                   for group in groups]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        timings = {"next": [], "submit": []}
        for _ in workers:
            for kind, values in results.get(timeout=seconds + 120).items():
                timings[kind] += values
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    finally:
        kill(server)
    figures = {}
    for kind, values in timings.items():
        values.sort()
        figures[f"{kind}_p50_ms"] = 1000 * statistics.median(values)
        figures[f"{kind}_p99_ms"] = 1000 * values[min(len(values) - 1, int(0.99 * len(values)))]
    figures["labels"] = len(timings["submit"])
    figures["requests_per_s"] = (len(timings["next"]) + len(timings["submit"])) / elapsed
    return figures


def postgresql_url(folder: str) -> str | None:
    """A throwaway server's database URL, or None when Debian's postgresql is not installed."""
    sys.path.insert(0, str(ROOT / "plugins/polyfuse-feedback/tests"))
    from conftest import find_postgres_binary

    initdb, pg_ctl = find_postgres_binary("initdb"), find_postgres_binary("pg_ctl")
    if not initdb or not pg_ctl:
        return None
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, user="postgres")
    port = free_port()
    data = os.path.join(folder, "data")
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "start", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"], check=True,
                   capture_output=True)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=4, help="client processes the annotators are spread over")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--think", type=float, default=1.0, help="seconds each annotator looks at a query before "
                        "answering (default 1: faster than people comparing trajectories); the saturation row uses 0")
    parser.add_argument("--workers", type=int, default=2, help="server processes (polyfuse feedback serve --workers)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="polyfuse-app-bench-") as folder:
        os.chmod(folder, 0o755)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{folder}/feedback.sqlite"
            else:
                pg_folder = tempfile.mkdtemp(prefix="polyfuse-pg-")
                url = postgresql_url(pg_folder)
                if url is None:
                    print("postgresql: skipped (apt-get install postgresql)")
                    continue
            for scenario, think in (("people", args.think), ("saturation", 0.0)):
                rows[f"{backend} {scenario}"] = measure(url, args.annotators, args.seconds, args.processes, think,
                                                        args.workers)
            if backend != "sqlite":
                from conftest import find_postgres_binary

                subprocess.run([*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                                find_postgres_binary("pg_ctl"), "-D", os.path.join(pg_folder, "data"), "-m",
                                "immediate", "stop"], capture_output=True)
                shutil.rmtree(pg_folder, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.annotators} concurrent annotators on loopback, {args.seconds:.0f} s per row, {args.workers} server "
          f"workers; people: {args.think:g} s between seeing a query and answering it; saturation: none")
    print(f"{'backend, load':<22} {'labels':>7} {'req/s':>7} {'fetch p50':>10} {'fetch p99':>10} {'submit p50':>11} "
          f"{'submit p99':>11}")
    for backend, f in rows.items():
        print(f"{backend:<22} {f['labels']:>7} {f['requests_per_s']:>7.0f} {f['next_p50_ms']:>8.1f}ms "
              f"{f['next_p99_ms']:>8.1f}ms {f['submit_p50_ms']:>9.1f}ms {f['submit_p99_ms']:>9.1f}ms")


if __name__ == "__main__":
    main()
