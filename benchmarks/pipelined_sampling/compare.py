"""Pipelined sampling vs synchronous polyfuse vs Stable-Baselines3 PPO, side by side in one run.

BabyAI-GoToLocalS6N2-v0, PPO with the same rollout (16 envs x 128 steps),
batch, epochs, learning rate, [64, 64] tanh heads, the grid flattened and
the mission through the same sentence-transformer, 1 torch thread per
process. For each seed, one after the other on the same machine:

- ceiling: one core stepping the 16 environments with random actions (no learning);
- polyfuse sync: gymnasium's SyncVectorEnv, acting and learning in turn in one process;
- polyfuse pipelined (per ``--workers``): env.vectorization: pipelined, workers
  step and act while the learner updates (policy one update old);
- SB3 DummyVecEnv (one process) and SB3 SubprocVecEnv (one process per environment), on
  MiniGrid as it ships (its own ``gen_obs``: what SB3 users run); and SB3 DummyVecEnv on
  polyfuse's cached view (``polyfuse.envs.minigrid_view``: the same observations, computed
  faster), which separates the library's loop from the simulator's speed-up.

Throughput is env steps per second of the training loop (polyfuse's
trainer loop, SB3's ``learn()``; start-up and evaluation left out on both
sides); held-out success is greedy, on the same 200 unseen episodes.
Prints a table and the ratios to SB3 DummyVecEnv, writes ``results.json``.

    .venv/bin/python benchmarks/pipelined_sampling/compare.py                # 1 seed, 100k steps
    .venv/bin/python benchmarks/pipelined_sampling/compare.py --seeds 3 --workers 1 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
CONFIG = HERE / "configs" / "babyai-ppo.yaml"
SB3_HPARAMS = {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 5e-4, "gamma": 0.99,
               "ent_coef": 0.01, "policy_kwargs": {"net_arch": [64, 64]}}


def run(command: list[str], what: str) -> tuple[dict, float]:
    """The command's last-line JSON and its whole wall time."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), elapsed


def polyfuse(steps: int, seed: int, episodes: int, vectorization: str, workers: int | None,
             params: dict | None = None) -> dict:
    """``params`` override the config's optimizer params (held_out.py's experiments)."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["env"]["vectorization"] = vectorization
    config["optimizer"]["params"].update(params or {})
    if workers is not None:
        config["env"]["workers"] = workers
    config["trainer"]["eval_episodes"] = episodes
    with tempfile.TemporaryDirectory() as output:
        path = Path(output) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        summary, elapsed = run([sys.executable, "-m", "polyfuse.cli", "run", str(path), "--steps", str(steps),
                                "--seed", str(seed), "--output-dir", str(Path(output) / "run"), "--json"],
                               f"polyfuse {vectorization}")
    return {"steps_per_second": summary["train_steps_per_second"], "success": summary["eval"]["success"],
            "process_time_s": elapsed}


def sb3(steps: int, seed: int, episodes: int, vec_env: str, minigrid_view: str = "stock") -> dict:
    summary, elapsed = run([sys.executable, str(HERE / "sb3_ppo.py"), "--vec-env", vec_env, "--steps", str(steps),
                            "--seed", str(seed), "--eval-episodes", str(episodes), "--minigrid-view", minigrid_view,
                            "--hparams", json.dumps(SB3_HPARAMS)], f"SB3 {vec_env}")
    return {"steps_per_second": summary["steps_per_second"], "success": summary["held_out"]["success"],
            "process_time_s": elapsed}


def ceiling(seconds: float) -> dict:
    summary, _ = run([sys.executable, str(HERE / "env_ceiling.py"), "--seconds", str(seconds)], "env ceiling")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; figures are means")
    parser.add_argument("--workers", type=int, action="append", help="pipelined worker counts (default: 1 and 2)")
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    workers = args.workers or [1, 2]

    runs: dict[str, list[dict]] = {}
    ceilings = []
    for seed in range(args.seeds):
        ceilings.append(ceiling(args.ceiling_seconds))
        contenders = {"polyfuse sync": lambda seed=seed: polyfuse(args.steps, seed, args.eval_episodes, "sync", None)}
        for count in workers:
            contenders[f"polyfuse pipelined, {count} worker{'s' if count > 1 else ''}"] = (
                lambda count=count, seed=seed: polyfuse(args.steps, seed, args.eval_episodes, "pipelined", count))
        contenders["SB3 DummyVecEnv"] = lambda seed=seed: sb3(args.steps, seed, args.eval_episodes, "dummy")
        contenders["SB3 SubprocVecEnv"] = lambda seed=seed: sb3(args.steps, seed, args.eval_episodes, "subproc")
        contenders["SB3 DummyVecEnv, polyfuse's view"] = (
            lambda seed=seed: sb3(args.steps, seed, args.eval_episodes, "dummy", "indexed"))
        for name, measure in contenders.items():
            result = measure()
            runs.setdefault(name, []).append(result)
            print(f"seed {seed}  {name:<36} {result['steps_per_second']:>8,.0f} env steps/s   "
                  f"held-out success {result['success']:.3f}   process {result['process_time_s']:.0f} s",
                  file=sys.stderr, flush=True)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    rows = {name: {"steps_per_second": mean([r["steps_per_second"] for r in results]),
                   "success": mean([r["success"] for r in results]),
                   "success_per_seed": [r["success"] for r in results],
                   "process_time_s": mean([r["process_time_s"] for r in results])}
            for name, results in runs.items()}
    dummy, subproc = rows["SB3 DummyVecEnv"]["steps_per_second"], rows["SB3 SubprocVecEnv"]["steps_per_second"]
    vector_ceiling = mean([c["vector_env_steps_per_second"] for c in ceilings])
    bare_ceiling = mean([c["bare_env_steps_per_second"] for c in ceilings])
    stock_ceiling = mean([c["stock_view_vector_env_steps_per_second"] for c in ceilings])
    print(f"\nBabyAI-GoToLocalS6N2-v0 PPO, {args.steps:,} steps, {args.seeds} seed(s), {os.cpu_count()} cores")
    print(f"{'':<38}{'env steps/s':>12}{'vs SB3 Dummy':>14}{'vs SB3 Subproc':>16}{'of ceiling':>12}"
          f"{'held-out success':>18}{'process s':>11}")
    for name, row in rows.items():
        speed = row["steps_per_second"]
        print(f"{name:<38}{speed:>12,.0f}{speed / dummy:>13.2f}x{speed / subproc:>15.2f}x"
              f"{speed / vector_ceiling:>12.2f}{row['success']:>18.3f}{row['process_time_s']:>11.0f}")
    print(f"{'ceiling: 1 core, 16 envs, no learning':<38}{vector_ceiling:>12,.0f}"
          f"   (MiniGrid's own view: {stock_ceiling:,.0f}; one bare env: {bare_ceiling:,.0f})")
    args.output.write_text(json.dumps({"steps": args.steps, "seeds": args.seeds, "cores": os.cpu_count(),
                                       "load_average_at_end": os.getloadavg(), "rows": rows,
                                       "ceiling": {"vector_env_steps_per_second": vector_ceiling,
                                                   "stock_view_vector_env_steps_per_second": stock_ceiling,
                                                   "bare_env_steps_per_second": bare_ceiling}}, indent=2) + "\n",
                           encoding="utf-8")


if __name__ == "__main__":
    main()
