"""polyfuse vs Stable-Baselines3, side by side in one run, on the same multimodal environments.

For each (environment, algorithm) both libraries train the same architecture
(images flattened, text through the same sentence-transformer, [64, 64]
heads) with the same hyperparameters, step budget, number of environments
and 1 torch thread each, one after the other on the same machine. The script
prints, per case and as means over ``--seeds``: env steps/s of the training
loop (start-up and evaluation left out, as SB3's ``learn()`` does) and their
ratio, the share of that time spent stepping the environments (polyfuse:
the whole vector env's step; SB3: each environment's own step and reset,
its DummyVecEnv bookkeeping left out), the whole process's wall and CPU time, and
held-out success of both libraries in both modes: greedy (``deterministic=True``) and sampled
(``deterministic=False``: PPO's distribution, DQN's final epsilon-greedy), each seed's with its 95%
Wilson interval in the results file. Machines here are noisy: read the ratios, not the absolute figures.

    .venv/bin/python benchmarks/rl_vs_sb3/compare.py --seeds 3  # every case, as in the README
    .venv/bin/python benchmarks/rl_vs_sb3/compare.py --case digits-ppo --steps 20000
    .venv/bin/python benchmarks/rl_vs_sb3/compare.py --case babyai-grid-ppo --ceiling  # issue 12's speed setting
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from polyfuse.errors import PolyfuseError
from polyfuse.overrides import apply_overrides

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
MODES = ("greedy", "sampled")


@dataclass(frozen=True)
class Case:
    name: str
    env_id: str
    algo: str
    steps: int
    num_envs: int
    sb3_hparams: dict


# SB3 hyperparameters mirror the polyfuse configs in configs/ (same rollout, batch, epochs, lr, net sizes).
# SB3 counts DQN's target_update_interval in env steps, polyfuse in gradient steps (one per 16-env step here).
CASES = [
    Case("digits-ppo", "polyfuse/DigitsVQA-v0", "ppo", 100_000, 16,
         {"n_steps": 64, "batch_size": 256, "n_epochs": 4, "learning_rate": 1e-3, "gamma": 0.99,
          "ent_coef": 0.01, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("digits-dqn", "polyfuse/DigitsVQA-v0", "dqn", 50_000, 16,
         {"buffer_size": 50_000, "learning_starts": 1_000, "batch_size": 128, "learning_rate": 1e-3,
          "train_freq": 1, "gradient_steps": 1, "target_update_interval": 500 * 16, "exploration_fraction": 0.3,
          "exploration_final_eps": 0.02, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("babyai-ppo", "BabyAI-GoToLocalS6N2-v0", "ppo", 100_000, 16,
         {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 5e-4, "gamma": 0.99,
          "ent_coef": 0.01, "policy_kwargs": {"net_arch": [64, 64]}}),
    Case("babyai-dqn", "BabyAI-GoToLocalS6N2-v0", "dqn", 100_000, 16,
         {"buffer_size": 100_000, "learning_starts": 1_000, "batch_size": 128, "learning_rate": 5e-4,
          "train_freq": 1, "gradient_steps": 1, "target_update_interval": 1_000 * 16, "exploration_fraction": 0.3,
          "exploration_final_eps": 0.05, "policy_kwargs": {"net_arch": [64, 64]}}),
    # Issue 12's speed setting: polyfuse's grid CNN pipeline against SB3's default MultiInputPolicy (an MLP).
    Case("babyai-grid-ppo", "BabyAI-GoToLocalS6N2-v0", "ppo", 50_000, 8,
         {"n_steps": 128, "batch_size": 256, "n_epochs": 10, "learning_rate": 5e-4, "gamma": 0.99,
          "ent_coef": 0.01}),
]


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], library: str, case: Case) -> tuple[dict, float, float]:
    """The command's last-line JSON summary, its whole wall time and its CPU time (start-up, training,
    evaluation). CPU time barely moves with other jobs' load, where wall time does."""
    start, cpu_start = time.perf_counter(), children_cpu_s()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    elapsed, cpu = time.perf_counter() - start, children_cpu_s() - cpu_start
    if result.returncode != 0:
        raise SystemExit(f"{library} failed on {case.name}:\n{result.stderr[-3000:]}")
    return last_json_line(result.stdout), elapsed, cpu


def run_polyfuse(case: Case, steps: int, seed: int, eval_episodes: int, vectorization: str | None,
                 assignments: list[str]) -> dict:
    config = yaml.safe_load((HERE / "configs" / f"{case.name}.yaml").read_text(encoding="utf-8"))
    config["trainer"]["eval_episodes"] = eval_episodes
    try:
        apply_overrides(config, assignments)
    except PolyfuseError as exc:
        raise SystemExit(f"--polyfuse-set: {exc}") from None
    if vectorization is not None:
        config["env"]["vectorization"] = vectorization
    with tempfile.TemporaryDirectory() as output:
        config_path = Path(output) / "pipeline.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")  # modality order as written
        summary, elapsed, cpu = timed(
            [sys.executable, "-m", "polyfuse.cli", "run", str(config_path),
             "--steps", str(steps), "--seed", str(seed), "--output-dir", str(Path(output) / "run"), "--json"],
            "polyfuse", case,
        )
    return {"steps_per_second": summary["train_steps_per_second"], **held_out(summary["eval"]),
            "train_time_s": summary["train_time_s"], "env_share": summary["env_time_s"] / summary["train_time_s"],
            "process_time_s": elapsed, "process_cpu_s": cpu}


def run_sb3(case: Case, steps: int, seed: int, eval_episodes: int) -> dict:
    summary, elapsed, cpu = timed(
        [sys.executable, str(HERE / "sb3_baseline.py"), "--env", case.env_id, "--algo", case.algo,
         "--steps", str(steps), "--num-envs", str(case.num_envs), "--seed", str(seed),
         "--eval-episodes", str(eval_episodes), "--hparams", json.dumps(case.sb3_hparams)],
        "stable-baselines3", case,
    )
    return {"steps_per_second": summary["steps_per_second"], **held_out(summary["held_out"]),
            "train_time_s": summary["wall_time_s"], "env_share": summary["env_time_s"] / summary["wall_time_s"],
            "process_time_s": elapsed, "process_cpu_s": cpu}


def env_ceiling(case: Case) -> float:
    """Env steps/s of the case's vector env alone (polyfuse's wrappers, SyncVectorEnv), random actions."""
    command = [sys.executable, str(HERE.parent / "pipelined_sampling" / "env_ceiling.py"), "--env", case.env_id,
               "--num-envs", str(case.num_envs)]
    summary, _, _ = timed(command, "env_ceiling.py", case)
    return summary["vector_env_steps_per_second"]


def held_out(figures: dict) -> dict:
    """Greedy and sampled held-out success with their 95% Wilson intervals, as flat figures."""
    return {f"{mode}_{key}": figures[mode][key] for mode in MODES for key in ("success", "success_low", "success_high")}


def mean_of(runs: list[dict]) -> dict:
    """Each figure's mean over the seeds, and the held-out successes (with intervals) one by one."""
    mean = {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}
    per_seed = {f"{mode}_per_seed": [[run[f"{mode}_success{end}"] for end in ("", "_low", "_high")] for run in runs]
                for mode in MODES}
    return {**mean, **per_seed}


def main() -> None:
    parser = argparse.ArgumentParser(description="polyfuse vs Stable-Baselines3 on multimodal RL")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES], help="default: all")
    parser.add_argument("--steps", type=int, help="override every case's step budget")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per case; figures are their means")
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--polyfuse-vectorization", choices=["sync", "async", "native"],
                        help="override the configs' env.vectorization (sync: gymnasium's SyncVectorEnv, as SB3's "
                        "DummyVecEnv; the DigitsVQA configs use native)")
    parser.add_argument("--polyfuse-set", action="append", default=[], metavar="PATH=YAML",
                        help="override one value of the polyfuse configs, e.g. "
                        "modalities.image.encoder.params.channels=[16,32] (repeatable)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time each case's environments alone on one core, random actions, no learning "
                        "(../pipelined_sampling/env_ceiling.py)")
    args = parser.parse_args()

    rows = []
    print(f"{'case':<12} {'train steps/s: polyfuse':>23} {'SB3':>6} {'ratio':>6}   {'env share: polyfuse':>19} "
          f"{'SB3':>4}   {'whole process s: polyfuse':>25} {'SB3':>6} {'ratio':>6}   "
          f"{'held-out greedy: polyfuse':>25} {'SB3':>6}   {'sampled: polyfuse':>17} {'SB3':>6}   "
          f"{'whole process CPU s: polyfuse':>29} {'SB3':>6}")
    for case in [c for c in CASES if not args.case or c.name in args.case]:
        steps = args.steps or case.steps
        ours = mean_of([run_polyfuse(case, steps, seed, args.eval_episodes, args.polyfuse_vectorization,
                                     args.polyfuse_set) for seed in range(args.seeds)])
        theirs = mean_of([run_sb3(case, steps, seed, args.eval_episodes) for seed in range(args.seeds)])
        ratio = ours["steps_per_second"] / theirs["steps_per_second"]
        process_ratio = theirs["process_time_s"] / ours["process_time_s"]  # > 1: polyfuse finishes sooner
        rows.append({"case": case.name, "steps": steps, "polyfuse_set": args.polyfuse_set, "polyfuse": ours,
                     "stable_baselines3": theirs, "steps_per_second_ratio": ratio,
                     "process_speed_ratio": process_ratio, "load_average": os.getloadavg()})
        print(f"{case.name:<12} {ours['steps_per_second']:>23.0f} {theirs['steps_per_second']:>6.0f} "
              f"{ratio:>5.2f}x   {ours['env_share']:>19.0%} {theirs['env_share']:>4.0%}   "
              f"{ours['process_time_s']:>25.1f} {theirs['process_time_s']:>6.1f} "
              f"{process_ratio:>5.2f}x   {ours['greedy_success']:>25.3f} {theirs['greedy_success']:>6.3f}   "
              f"{ours['sampled_success']:>17.3f} {theirs['sampled_success']:>6.3f}   "
              f"{ours['process_cpu_s']:>29.1f} {theirs['process_cpu_s']:>6.1f}", flush=True)
        if args.ceiling:
            rows[-1]["ceiling"] = ceiling = env_ceiling(case)
            print(f"{'':<12} ceiling, environments alone on one core: {ceiling:,.0f} env steps/s", flush=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
