"""polyfuse vs Stable-Baselines3, side by side in one run, on the same multimodal environments.

For each (environment, algorithm) both libraries train with the same step
budget, number of environments, hidden sizes and 1 torch thread each, one
after the other on the same machine; the script prints env steps/s and
held-out success for both and their ratios. Machines here are noisy: read
the ratios, not the absolute figures.

    .venv/bin/python benchmarks/rl_vs_sb3/compare.py            # every case
    .venv/bin/python benchmarks/rl_vs_sb3/compare.py --case digits-ppo --steps 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


@dataclass(frozen=True)
class Case:
    name: str
    env_id: str
    algo: str
    steps: int
    num_envs: int
    sb3_hparams: dict


# SB3 hyperparameters mirror the polyfuse configs in configs/ (same rollout, batch, epochs, lr, net sizes).
CASES = [
    Case("digits-ppo", "polyfuse/DigitsVQA-v0", "ppo", 100_000, 16,
         {"n_steps": 64, "batch_size": 256, "n_epochs": 4, "learning_rate": 1e-3, "gamma": 0.99,
          "ent_coef": 0.01, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("digits-dqn", "polyfuse/DigitsVQA-v0", "dqn", 50_000, 16,
         {"buffer_size": 50_000, "learning_starts": 1_000, "batch_size": 128, "learning_rate": 1e-3,
          "train_freq": 1, "gradient_steps": 1, "target_update_interval": 500, "exploration_fraction": 0.3,
          "exploration_final_eps": 0.02, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("babyai-ppo", "BabyAI-GoToLocalS6N2-v0", "ppo", 100_000, 16,
         {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 5e-4, "gamma": 0.99,
          "ent_coef": 0.01, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("babyai-dqn", "BabyAI-GoToLocalS6N2-v0", "dqn", 100_000, 16,
         {"buffer_size": 100_000, "learning_starts": 1_000, "batch_size": 128, "learning_rate": 5e-4,
          "train_freq": 1, "gradient_steps": 1, "target_update_interval": 1_000, "exploration_fraction": 0.3,
          "exploration_final_eps": 0.05, "policy_kwargs": {"net_arch": [64, 64]}}),
]


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def run_polyfuse(case: Case, steps: int, seed: int, eval_episodes: int) -> dict:
    with tempfile.TemporaryDirectory() as output:
        result = subprocess.run(
            [sys.executable, "-m", "polyfuse.cli", "run", str(HERE / "configs" / f"{case.name}.yaml"),
             "--steps", str(steps), "--seed", str(seed), "--output-dir", output, "--json"],
            capture_output=True, text=True, env=ENV,
        )
    if result.returncode != 0:
        raise SystemExit(f"polyfuse failed on {case.name}:\n{result.stderr[-3000:]}")
    summary = last_json_line(result.stdout)
    return {"steps_per_second": summary["steps_per_second"], "success": summary["eval"]["success"],
            "wall_time_s": summary["wall_time_s"]}


def run_sb3(case: Case, steps: int, seed: int, eval_episodes: int) -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "sb3_baseline.py"), "--env", case.env_id, "--algo", case.algo,
         "--steps", str(steps), "--num-envs", str(case.num_envs), "--seed", str(seed),
         "--eval-episodes", str(eval_episodes), "--hparams", json.dumps(case.sb3_hparams)],
        capture_output=True, text=True, env=ENV,
    )
    if result.returncode != 0:
        raise SystemExit(f"stable-baselines3 failed on {case.name}:\n{result.stderr[-3000:]}")
    summary = last_json_line(result.stdout)
    return {"steps_per_second": summary["steps_per_second"], "success": summary["held_out"]["success"],
            "wall_time_s": summary["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="polyfuse vs Stable-Baselines3 on multimodal RL")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES], help="default: all")
    parser.add_argument("--steps", type=int, help="override every case's step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()

    rows = []
    header = f"{'case':<12} {'polyfuse steps/s':>16} {'SB3 steps/s':>12} {'ratio':>6} " \
             f"{'polyfuse success':>16} {'SB3 success':>11}"
    print(header)
    for case in [c for c in CASES if not args.case or c.name in args.case]:
        steps = args.steps or case.steps
        ours = run_polyfuse(case, steps, args.seed, args.eval_episodes)
        theirs = run_sb3(case, steps, args.seed, args.eval_episodes)
        ratio = ours["steps_per_second"] / theirs["steps_per_second"]
        rows.append({"case": case.name, "steps": steps, "polyfuse": ours, "stable_baselines3": theirs,
                     "steps_per_second_ratio": ratio})
        print(f"{case.name:<12} {ours['steps_per_second']:>16.0f} {theirs['steps_per_second']:>12.0f} "
              f"{ratio:>5.2f}x {ours['success']:>16.3f} {theirs['success']:>11.3f}", flush=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
