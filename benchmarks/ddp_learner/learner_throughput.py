"""Learner-step throughput of `polyfuse run --nproc 2` against one process, at the same global batch.

The pipeline's update dominates: DigitsVQA with PPO on a wider network (small CNN 32/64 channels, 256-wide
gated fuser and heads), 32 epochs over each 1024-transition rollout in one 1024-sample minibatch, so each
rank of the 2-process run computes 512 samples per gradient step and the ranks average their gradients.
The budget is counted in gradient steps; the figure is the summary's ``train_steps_per_second``: gradient
steps per second of the training loop (rollouts included, process start and evaluation left out).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ddp_learner/learner_throughput.py

Runs alternate (1 process, 2 processes, ...) so that a change in the machine's load hits both alike. On a
machine shared with other work the wall-clock ratio says more about the scheduler than about polyfuse (two
processes get two shares of a crowded CPU), so CPU seconds are measured too (all of a run's processes): each
kind also runs one rollout's worth of steps, and the difference to the full run is the CPU a gradient step
costs once started. Gradient steps per CPU second, 2 processes against 1, is the parallel efficiency; twice it
estimates the speed-up on two idle cores (if the ranks never waited for each other).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

import yaml

HERE = Path(__file__).parent
ROLLOUT_STEPS = 32
"""Gradient steps per rollout: n_epochs (32) x one minibatch."""
PIPELINE = {
    "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 16, "vectorization": "native"},
    "modalities": {
        "image": {"encoder": {"name": "small-cnn", "params": {"channels": [32, 64], "output_dim": 256}}},
        "question": {"encoder": "sbert"},
    },
    "fuser": {"name": "gated", "params": {"hidden_dim": 256}},
    "reward": "env",
    "optimizer": {"name": "ppo", "params": {
        "learning_rate": 0.0003, "n_steps": 64, "n_epochs": 32, "batch_size": 1024, "hidden_sizes": [256, 256],
    }},
    "trainer": {"budget_unit": "gradient_steps", "eval_every": 10**9, "eval_episodes": 10,
                "checkpoint_every": 10**9, "num_threads": 1},
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant: launcher and ranks
    return usage.ru_utime + usage.ru_stime


def run(config: Path, output: Path, nproc: int) -> dict:
    command = [sys.executable, "-m", "polyfuse", "run", str(config), "--output-dir", str(output), "--json"]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"polyfuse run --nproc {nproc} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=128, help="gradient steps per run (32 per rollout)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind, alternating")
    parser.add_argument("--output", type=Path, default=HERE / "results.jsonl")
    args = parser.parse_args()
    load = os.getloadavg()
    rates: dict[int, list[float]] = {1: [], 2: []}
    per_cpu_second: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        config, short = Path(scratch) / "pipeline.yaml", Path(scratch) / "one_rollout.yaml"
        PIPELINE["trainer"]["total_steps"] = args.steps
        config.write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
        PIPELINE["trainer"]["total_steps"] = ROLLOUT_STEPS
        short.write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
        for repeat in range(args.repeats):
            for nproc in (1, 2):
                cpu_before = cpu_seconds()
                run(short, Path(scratch) / f"short{nproc}", nproc)
                cpu_short = cpu_seconds() - cpu_before
                summary = run(config, Path(scratch) / f"run{nproc}", nproc)
                cpu = cpu_seconds() - cpu_before - cpu_short
                rates[nproc].append(summary["train_steps_per_second"])
                marginal = (cpu - cpu_short) / (args.steps - ROLLOUT_STEPS)
                per_cpu_second[nproc].append(round(1 / marginal, 3))
                print(f"repeat {repeat}: {nproc} process(es): {summary['train_steps_per_second']:.1f} gradient "
                      f"steps/s ({summary['steps']} steps in {summary['train_time_s']:.1f} s of training); "
                      f"{1000 * marginal:.0f} CPU ms per gradient step ({cpu:.1f} CPU s for the run, "
                      f"{cpu_short:.1f} for one rollout's)", flush=True)
    one, two = median(rates[1]), median(rates[2])
    efficiency = median(per_cpu_second[2]) / median(per_cpu_second[1])
    after = os.getloadavg()
    record = {"minibatch": PIPELINE["optimizer"]["params"]["batch_size"],
              "cpu": "marginal: a full run's CPU minus a one-rollout run's, per gradient step after the first rollout",
              "one_process": one, "two_processes": two, "ratio": round(two / one, 3), "runs": rates,
              "steps_per_cpu_second": per_cpu_second, "parallel_efficiency": round(efficiency, 3),
              "steps": args.steps, "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load], "load_average_after": [round(x, 2) for x in after]}
    print(f"median gradient steps/s: 1 process {one:.1f}, 2 processes {two:.1f}: ratio {two / one:.2f}x "
          f"(load average {load[0]:.1f} before, {after[0]:.1f} after, on {os.cpu_count()} CPUs)")
    print(f"gradient steps per CPU second, 2 processes against 1: {efficiency:.2f} (on 2 idle cores: about "
          f"{2 * efficiency:.2f}x)")
    with args.output.open("a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
