"""polyfuse's preference learning vs the ``imitation`` library's PreferenceComparisons, side by side in one run.

Both learn seals/CartPole-v0 (fixed horizon 500, reward 1 while balanced: task.py) from a synthetic
annotator's pairwise preferences between trajectory fragments, never from the environment's reward, with
the same annotator (Boltzmann temperature, fragment length), the same query schedule (``rounds`` equal
rounds of labels), the same label budget, the same PPO (hyperparameters, [64, 64] tanh heads, 8 envs) and
the same agent budget (env steps trained against a learned reward), 1 torch thread per process, one process
after the other. imitation runs in its own venv (setup-imitation.sh: it pins stable-baselines3~=2.2.1 and
gymnasium~=0.29), as a subprocess reporting JSON.

Prints, as means over ``--seeds``: the final policy's true return on the same held-out episodes for polyfuse
at each label budget (``--labels``) and for imitation at its budget (``--imitation-labels``, default the
largest), the ratio "labels polyfuse needs to reach imitation's final return / imitation's labels"
(target <= 0.5), and the time per label (whole process wall time / labels) of each, the reward-training
share of the wall time, and the ratio.

    nice -n 10 .venv/bin/python benchmarks/feedback_vs_imitation/run.py --seeds 3      # as in the README
    .venv/bin/python benchmarks/feedback_vs_imitation/run.py --quick                    # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
IMITATION_PYTHON = HERE / ".venv-imitation" / "bin" / "python"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
EVAL_SEED_BASE = 2**31  # polyfuse.training.seeding.EVAL_SEED_BASE: the held-out episodes both sides play

# Settings both sides share (the README's table). PPO's are those of imitation's own preference-comparisons
# tutorial for seals/CartPole-v0 (docs/tutorials/5_train_preference_comparisons), with SB3's default [64, 64]
# tanh MlpPolicy instead of its FeedForward32Policy + input normalisation; on the environment's reward they
# reach 500 within 40k steps in polyfuse.
SHARED: dict[str, Any] = {
    "num_envs": 8,
    "ppo": {"n_steps": 256, "batch_size": 64, "n_epochs": 10, "learning_rate": 2e-3, "gamma": 0.97,
            "gae_lambda": 0.95, "clip_range": 0.1, "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5,
            "hidden_sizes": [64, 64]},
    "fragment_length": 50,            # steps per queried fragment
    "temperature": 0.0,               # 0: rational (higher return preferred, equal returns a tie, 0.5), where
                                      # both annotators are the same function; T > 0: P(second) = sigmoid((R2-R1)/T)
    "rounds": 10,                     # label rounds of labels / rounds each (constant schedule)
    "reward_hidden_sizes": [32, 32],  # imitation's BasicRewardNet default; polyfuse: the same MLP head
    "reward_batch_size": 32,          # pairs per gradient step (imitation's default)
    "reward_lr": 1e-3,                # imitation's default; polyfuse's too
    "normalize_reward": True,         # polyfuse's default; imitation: NormalizedRewardNet(RunningNorm)
}
# imitation's own reward-training schedule (its script's epochs, the class's initial multiplier).
IMITATION_ONLY = {"reward_epochs": 3, "initial_epoch_multiplier": 200, "exploration_frac": 0.0}


QUERY_SCHEDULE = {"share": False}  # set in main(): does this polyfuse's preference-model take initial_share?


def polyfuse_config(labels: int, agent_steps: int, eval_episodes: int, shared: dict[str, Any] = SHARED) -> dict:
    """The polyfuse pipeline: PPO against ``preference-model`` fed by the ``synthetic`` annotator.

    One template: edit here to try other preference-model params (the plugin is growing a query schedule,
    ``initial_share`` + ``schedule``; today's schedule is ``labels_per_update`` every
    ``reward_update_every`` steps). The run is ``agent_steps + period`` env steps: the first period
    collects fragments with the reward model still untrained (scores 0, PPO only keeps its random policy),
    as imitation's first round samples from the untrained agent outside its agent budget; labels are asked
    at the end of periods 1..rounds, and the last period trains on the final reward model.
    """
    rounds = shared["rounds"]
    period = agent_steps // rounds
    ppo = shared["ppo"]
    if QUERY_SCHEDULE["share"]:  # the plugin's query schedule (after 40bd57c): rounds + 1 updates in the run,
        # labels / rounds at the first (initial_share) and evenly over the next rounds - 1 (query_until stops
        # the schedule there: ceil(rounds * 0.95 * (rounds - 1) / rounds) = rounds - 1), none at the last
        schedule = {"initial_share": 1 / rounds, "schedule": "constant",
                    "query_until": 0.95 * (rounds - 1) / rounds}
    else:  # up to 40bd57c: a fixed number of queries per update until max_labels are asked
        schedule = {"labels_per_update": max(labels // rounds, 1)}
    return {
        "env": {"id": "fvi/CartPoleDict-v0", "num_envs": shared["num_envs"], "vectorization": "sync"},
        "modalities": {"state": {"encoder": {"name": "flatten", "params": {"rescale": False}}}},
        "fuser": "concat",
        "reward": {"name": "preference-model", "params": {
            "feedback": {"name": "synthetic", "params": {"temperature": shared["temperature"], "error_rate": 0.0}},
            "max_labels": labels,
            **schedule,
            "fragment_length": shared["fragment_length"],
            "pool_size": max(period // shared["fragment_length"], 2),  # the last period's fragments, as imitation
            "ensemble_size": 1,                                         # imitation's BasicRewardNet: one network
            "head": "concat",                                           # MLP on (state, one-hot action), as imitation
            "hidden_sizes": shared["reward_hidden_sizes"],
            "batch_size": shared["reward_batch_size"],
            "learning_rate": shared["reward_lr"],
            "gradient_steps": 200,                                      # per update (default 50 learned less in a 1-seed probe)
            "heldout_fraction": 0.0,                                    # every label trains, as in imitation
            "normalize": shared["normalize_reward"],
            "selection": "random",
        }},
        "optimizer": {"name": "ppo", "params": {
            "n_steps": ppo["n_steps"], "batch_size": ppo["batch_size"], "n_epochs": ppo["n_epochs"],
            "learning_rate": ppo["learning_rate"], "gamma": ppo["gamma"], "gae_lambda": ppo["gae_lambda"],
            "clip_range": ppo["clip_range"], "ent_coef": ppo["ent_coef"], "vf_coef": ppo["vf_coef"],
            "max_grad_norm": ppo["max_grad_norm"], "hidden_sizes": ppo["hidden_sizes"],
            "activation": "tanh", "ortho_init": True,  # SB3's MlpPolicy
        }},
        "trainer": {"total_steps": agent_steps + period, "reward_update_every": period,
                    "eval_every": 10**9, "eval_episodes": eval_episodes, "checkpoint_every": 10**9,
                    "num_threads": 1},
    }


def last_json_lines(output: str, count: int) -> list[dict]:
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines[-count:]]


def run_process(command: list[str], what: str, env: dict[str, str] = ENV) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout, elapsed


def polyfuse_tree_env(tree: Path | None) -> dict[str, str]:
    """The environment of polyfuse's runs: with ``tree``, its core and plugins come first on the path (a
    snapshot of one commit, measured while others edit the working tree the .venv installs)."""
    if tree is None:
        return ENV
    paths = [str(tree / "core"), *sorted(str(p) for p in (tree / "plugins").glob("*/src"))]
    return {**ENV, "PYTHONPATH": os.pathsep.join(paths + [ENV.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def snapshot(commit: str, into: Path) -> Path:
    """``git archive`` of ``commit`` extracted under ``into`` (reads the repository, changes nothing)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


POLYFUSE_ENV = ENV


def run_polyfuse(labels: int, agent_steps: int, seed: int, eval_episodes: int) -> dict:
    config = polyfuse_config(labels, agent_steps, eval_episodes)
    with tempfile.TemporaryDirectory() as output:
        path = Path(output) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        stdout, elapsed = run_process(
            [sys.executable, str(HERE / "polyfuse_side.py"), str(path), "--seed", str(seed),
             "--output-dir", str(Path(output) / "run")], f"polyfuse ({labels} labels, seed {seed})", POLYFUSE_ENV)
        summary, timings = last_json_lines(stdout, 2)
        records = [json.loads(line) for line in (Path(output) / "run" / "metrics.jsonl").read_text().splitlines()]
    got = max((r.get("reward/labels", 0) for r in records if r.get("kind") == "train"), default=0)
    times = timings["timings"]
    return {"return": summary["eval"]["return"], "labels": int(got), "env_steps": summary["steps"],
            "process_time_s": elapsed, "reward_update_s": times["reward_update_s"],
            "reward_train_s": times["reward_train_s"], "reward_score_s": times["reward_score_s"],
            "equal_return_share": times["equal_returns"] / max(times["queries"], 1)}


def run_imitation(labels: int, agent_steps: int, seed: int, eval_episodes: int) -> dict:
    settings = {**SHARED, **IMITATION_ONLY, "labels": labels, "agent_steps": agent_steps, "seed": seed,
                "eval_episodes": eval_episodes, "eval_seed_base": EVAL_SEED_BASE}
    stdout, elapsed = run_process([str(IMITATION_PYTHON), str(HERE / "imitation_side.py"), json.dumps(settings)],
                                  f"imitation ({labels} labels, seed {seed})")
    (result,) = last_json_lines(stdout, 1)
    return {"return": result["eval_return"], "labels": result["labels"], "env_steps": result["agent_steps"],
            "process_time_s": elapsed, "reward_update_s": result["label_s"] + result["reward_train_s"],
            "reward_train_s": result["reward_train_s"], "agent_s": result["agent_s"], "sample_s": result["sample_s"],
            "equal_return_share": result["equal_returns"] / max(result["labels"], 1)}


def run_controls(agent_steps: int, seed: int, eval_episodes: int) -> tuple[float, float]:
    """Both PPOs on the environment's reward (no preferences): held-out true return of polyfuse's, SB3's."""
    config = polyfuse_config(10, agent_steps, eval_episodes)
    config["reward"] = "env"
    config["trainer"].update(total_steps=agent_steps, reward_update_every=agent_steps)
    with tempfile.TemporaryDirectory() as output:
        path = Path(output) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        stdout, _ = run_process([sys.executable, str(HERE / "polyfuse_side.py"), str(path), "--seed", str(seed),
                                 "--output-dir", str(Path(output) / "run")], "polyfuse (env reward)", POLYFUSE_ENV)
    ours = last_json_lines(stdout, 2)[0]["eval"]["return"]
    settings = {**SHARED, **IMITATION_ONLY, "labels": 0, "agent_steps": agent_steps, "seed": seed,
                "eval_episodes": eval_episodes, "eval_seed_base": EVAL_SEED_BASE, "env_reward": True}
    stdout, _ = run_process([str(IMITATION_PYTHON), str(HERE / "imitation_side.py"), json.dumps(settings)],
                            "stable-baselines3 (env reward)")
    return ours, last_json_lines(stdout, 1)[0]["eval_return"]


def mean_of(runs: list[dict]) -> dict:
    mean = {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}
    return {**mean, "return_per_seed": [round(run["return"], 1) for run in runs]}


def labels_to_reach(target: float, curve: list[tuple[int, float]]) -> tuple[int | None, float | None]:
    """The smallest tested budget whose mean return reaches ``target``, and a log-linear interpolation between
    the last budget below and the first at or above it (None when no budget reaches it)."""
    below = None
    for labels, value in curve:
        if value >= target:
            if below is None or value == below[1]:
                return labels, float(labels)
            fraction = (target - below[1]) / (value - below[1])
            return labels, math.exp(math.log(below[0]) + fraction * (math.log(labels) - math.log(below[0])))
        below = (labels, value)
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description="polyfuse vs imitation: preference learning on seals/CartPole-v0")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; figures are their means")
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 100, 200, 500], help="polyfuse's label budgets")
    parser.add_argument("--imitation-labels", type=int, nargs="+",
                        help="imitation's label budgets (default: the largest of --labels)")
    parser.add_argument("--agent-steps", type=int, default=102_400,
                        help="env steps each agent trains against its learned reward (a multiple of rounds x 2048)")
    parser.add_argument("--eval-episodes", type=int, default=50, help="held-out episodes (500 steps each)")
    parser.add_argument("--rounds", type=int, default=SHARED["rounds"], help="label rounds (constant schedule)")
    parser.add_argument("--temperature", type=float, default=SHARED["temperature"])
    parser.add_argument("--fragment-length", type=int, default=SHARED["fragment_length"])
    parser.add_argument("--control", action="store_true",
                        help="also train both PPOs on the environment's reward (no preferences), per seed: what "
                        "each agent reaches with perfect reward information in the same budget")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, labels 20 40, 4,096 agent steps, 2 rounds, 3 eval episodes")
    parser.add_argument("--polyfuse-commit", metavar="REF",
                        help="run polyfuse (core and plugins) from a `git archive` of this commit instead of the "
                        "working tree the .venv installs (for measuring while the tree is being edited)")
    parser.add_argument("--imitation-set", action="append", default=[], metavar="KEY=JSON",
                        help="override one of imitation's own settings (reward_epochs, initial_epoch_multiplier, "
                        "exploration_frac), e.g. initial_epoch_multiplier=4 (its tutorial's)")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    global POLYFUSE_ENV
    if args.polyfuse_commit:
        tree = snapshot(args.polyfuse_commit, Path(tempfile.mkdtemp(prefix="fvi-polyfuse-")))
        atexit.register(shutil.rmtree, tree, ignore_errors=True)
        POLYFUSE_ENV = polyfuse_tree_env(tree)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.polyfuse_commit],
                                capture_output=True, text=True, check=True).stdout.strip()
        print(f"polyfuse from commit {commit} ({tree})", flush=True)
    if args.quick:
        args.seeds, args.labels, args.agent_steps, args.rounds, args.eval_episodes = 1, [20, 40], 4_096, 2, 3
    if not IMITATION_PYTHON.exists():
        raise SystemExit(f"no {IMITATION_PYTHON}: run `bash {HERE.relative_to(ROOT)}/setup-imitation.sh` first")
    probe_code = "from polyfuse_feedback.plugin import PreferenceModelConfig as C; print('initial_share' in C.model_fields)"
    probe = subprocess.run([sys.executable, "-c", probe_code], capture_output=True, text=True, env=POLYFUSE_ENV,
                           check=True)
    QUERY_SCHEDULE["share"] = probe.stdout.strip() == "True"
    SHARED.update(rounds=args.rounds, temperature=args.temperature, fragment_length=args.fragment_length)
    for item in args.imitation_set:
        key, _, value = item.partition("=")
        if key not in IMITATION_ONLY:
            raise SystemExit(f"--imitation-set: {key!r} is not one of {sorted(IMITATION_ONLY)}")
        IMITATION_ONLY[key] = json.loads(value)
    rollout = SHARED["ppo"]["n_steps"] * SHARED["num_envs"]
    if args.agent_steps % (args.rounds * rollout):
        raise SystemExit(f"--agent-steps must be a multiple of rounds x rollout = {args.rounds * rollout}")
    imitation_labels = args.imitation_labels or [max(args.labels)]
    for labels in sorted(set(args.labels) | set(imitation_labels)):
        if labels % args.rounds:
            raise SystemExit(f"label budgets must be multiples of --rounds ({args.rounds}); got {labels}")

    load = os.getloadavg()
    print(f"seals/CartPole-v0, {args.agent_steps:,} agent steps, {args.rounds} rounds, fragments of "
          f"{SHARED['fragment_length']}, temperature {SHARED['temperature']}, seeds 0-{args.seeds - 1}, "
          f"{args.eval_episodes} held-out episodes; load average at start {load[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    started = time.perf_counter()
    ours: dict[int, list[dict]] = {n: [] for n in args.labels}
    theirs: dict[int, list[dict]] = {n: [] for n in imitation_labels}
    for seed in range(args.seeds):
        for labels in imitation_labels:
            run = run_imitation(labels, args.agent_steps, seed, args.eval_episodes)
            theirs[labels].append(run)
            print(f"  seed {seed} imitation {labels:>4} labels: return {run['return']:6.1f}, "
                  f"{run['process_time_s']:5.1f} s", flush=True)
        for labels in args.labels:
            run = run_polyfuse(labels, args.agent_steps, seed, args.eval_episodes)
            ours[labels].append(run)
            print(f"  seed {seed} polyfuse  {labels:>4} labels: return {run['return']:6.1f}, "
                  f"{run['process_time_s']:5.1f} s", flush=True)
    controls = []
    if args.control:
        for seed in range(args.seeds):
            controls.append(run_controls(args.agent_steps, seed, args.eval_episodes))
            print(f"  seed {seed} control (env reward): polyfuse PPO {controls[-1][0]:.1f}, SB3 PPO "
                  f"{controls[-1][1]:.1f}", flush=True)
    ours_mean = {n: mean_of(runs) for n, runs in ours.items()}
    theirs_mean = {n: mean_of(runs) for n, runs in theirs.items()}

    print(f"\n{'labels':>6}  {'true return: polyfuse':>21}  {'imitation':>9}   {'equal-return queries':>20} "
          f"{'imitation':>9}   per seed")
    for labels in sorted(set(args.labels) | set(imitation_labels)):
        mine = f"{ours_mean[labels]['return']:21.1f}" if labels in ours_mean else f"{'':>21}"
        other = f"{theirs_mean[labels]['return']:9.1f}" if labels in theirs_mean else f"{'':>9}"
        seeds = "  ".join(f"{name} {means[labels]['return_per_seed']}" for name, means in
                          (("polyfuse", ours_mean), ("imitation", theirs_mean)) if labels in means)
        ties = "".join(f"{means[labels]['equal_return_share']:>{width}.0%}" if labels in means else " " * width
                       for means, width in ((ours_mean, 20), (theirs_mean, 10)))
        print(f"{labels:>6}  {mine}  {other}   {ties}   {seeds}")

    budget = max(imitation_labels)
    target = theirs_mean[budget]["return"]
    curve = [(n, ours_mean[n]["return"]) for n in sorted(args.labels)]
    reached, interpolated = labels_to_reach(target, curve)
    if reached is None:
        label_line = (f"labels polyfuse needs to reach imitation's {target:.1f} ({budget} labels): more than "
                      f"{max(args.labels)} tested (best {max(v for _, v in curve):.1f}); ratio > "
                      f"{max(args.labels) / budget:.2f} (target <= 0.5)")
    else:
        label_line = (f"labels polyfuse needs to reach imitation's {target:.1f} ({budget} labels): {reached} "
                      f"tested (~{interpolated:.0f} interpolated); ratio {reached / budget:.2f} "
                      f"(~{interpolated / budget:.2f}; target <= 0.5)")
    print("\n" + label_line)
    if controls:
        print(f"control, the same PPO on the environment's reward ({args.agent_steps:,} steps): polyfuse "
              f"{sum(c[0] for c in controls) / len(controls):.1f}, stable-baselines3 "
              f"{sum(c[1] for c in controls) / len(controls):.1f} (per seed "
              f"{[(round(a, 1), round(b, 1)) for a, b in controls]})")

    timing_rows = []
    print(f"\n{'time per label at':>17} {'labels':>6}  {'polyfuse s':>10} {'imitation s':>11} {'ratio':>6}   "
          f"{'reward update share: polyfuse':>29} {'imitation':>9}   {'reward training share':>21} {'imitation':>9}")
    for labels in sorted(set(args.labels) & set(imitation_labels)):
        mine, other = ours_mean[labels], theirs_mean[labels]
        mine_per, other_per = mine["process_time_s"] / labels, other["process_time_s"] / labels
        timing_rows.append({"labels": labels, "polyfuse_s_per_label": mine_per, "imitation_s_per_label": other_per,
                            "ratio": other_per / mine_per})
        print(f"{'':>17} {labels:>6}  {mine_per:10.3f} {other_per:11.3f} {other_per / mine_per:5.2f}x   "
              f"{mine['reward_update_s'] / mine['process_time_s']:29.1%} "
              f"{other['reward_update_s'] / other['process_time_s']:9.1%}   "
              f"{mine['reward_train_s'] / mine['process_time_s']:21.1%} "
              f"{other['reward_train_s'] / other['process_time_s']:9.1%}")
    print("(ratio > 1: polyfuse spends less wall time per label; time per label = whole process / labels)")
    args.output.write_text(json.dumps({
        "settings": {**SHARED, "imitation_only": IMITATION_ONLY, "agent_steps": args.agent_steps,
                     "seeds": args.seeds, "eval_episodes": args.eval_episodes, "load_average_at_start": load,
                     "polyfuse_commit": args.polyfuse_commit},
        "polyfuse": {str(n): v for n, v in ours_mean.items()},
        "imitation": {str(n): v for n, v in theirs_mean.items()},
        "labels_to_reach": {"target": target, "imitation_labels": budget, "tested": reached,
                            "interpolated": interpolated},
        "time_per_label": timing_rows,
        "control_env_reward": [{"polyfuse": c[0], "stable_baselines3": c[1]} for c in controls],
        "benchmark_wall_time_s": time.perf_counter() - started,
    }, indent=2) + "\n")
    print(f"results: {args.output} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
