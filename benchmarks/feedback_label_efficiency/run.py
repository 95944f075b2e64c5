"""Label efficiency of RLHF in polyfuse: held-out success against the number of preference labels.

For each task, the agent is trained against the ``preference-model`` reward fed by the rational ``synthetic``
annotator (temperature 0, error rate 0: it prefers the segment with the higher true return) at several label
budgets, with random queries (``selection: random``) and active ones (``selection: disagreement`` and
``entropy``), next to the very same agent trained on the environment's reward (``reward: {name: env}``, same
optimizer, same budget). Each grid cell is one ``polyfuse run CONFIG --json`` subprocess with 1 torch thread, one after the
other.

- DigitsVQA: ``examples/digits_vqa_rlhf.yaml`` is read at run time; only ``reward.params.max_labels``,
  ``reward.params.selection``, ``trainer.seed`` and ``trainer.output_dir`` are changed (the env-reward arm:
  the same file with ``reward: {name: env}``), so improvements to that example carry over.
- BabyAI-GoToLocalS6N2-v0: ``examples/babyai_rlhf.yaml`` the same way (its env-reward arm is the README's
  BabyAI pipeline, ``examples/babyai_goto_local_ppo.yaml``, at the same 50k-step budget and with the same
  KL penalty to the warm-started policy).

Writes into ``--out``: ``cells/*.json`` (one per grid cell, named by a hash of its effective config: a cell
whose file exists is skipped, so an interrupted benchmark continues where it stopped, and a changed example
is rerun), ``results.csv``, ``results.md`` and ``label_efficiency.png`` (success vs labels, log x, the
env-reward agent as a horizontal line). Prints the table and, per task, RLHF success / env-reward success.
Runs go to ``--runs`` (their checkpoints and label stores are deleted once read; metrics.jsonl is kept).

    nice -n 10 .venv/bin/python benchmarks/feedback_label_efficiency/run.py              # the default grid, ~25 min
    .venv/bin/python benchmarks/feedback_label_efficiency/run.py --quick                  # smoke run, ~3 min
    .venv/bin/python benchmarks/feedback_label_efficiency/run.py --tasks digits --labels 100,1000 --seeds 0,1
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POLYFUSE = ROOT / ".venv" / "bin" / "polyfuse"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}

TASKS = {
    "digits": {"title": "DigitsVQA", "config": ROOT / "examples" / "digits_vqa_rlhf.yaml"},
    "babyai": {"title": "BabyAI-GoToLocalS6N2-v0", "config": ROOT / "examples" / "babyai_rlhf.yaml"},
}
ACTIVE_ARMS = ("disagreement", "entropy")  # the two active selections
ARMS = ("env", "random", *ACTIVE_ARMS)
# What a run leaves that the benchmark does not need (checkpoints, the label store with its segments, caches).
BULKY = ("checkpoint", "checkpoint.1", "checkpoint.2", "checkpoint.frozen", "feedback.sqlite",
         "feedback.sqlite-wal", "feedback.sqlite-shm", "feature_cache", "learning_curve.png")


@dataclass(frozen=True)
class Cell:
    task: str
    arm: str           # env | random | disagreement | entropy
    labels: int | None  # None for the env-reward arm
    seed: int

    @property
    def name(self) -> str:
        labels = "na" if self.labels is None else str(self.labels)
        return f"{self.task}_{self.arm}_{labels}_s{self.seed}"


def load_base(task: str) -> dict[str, Any]:
    path = TASKS[task]["config"]
    if not path.exists():
        raise SystemExit(f"{path} is missing")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def quick_budget(config: dict[str, Any], task: str) -> None:
    """Tiny budgets for a smoke run: the same pipeline, a few thousand steps."""
    trainer = config["trainer"]
    steps = 4096 if task == "babyai" else 4000
    trainer.update(total_steps=steps, eval_every=steps, checkpoint_every=steps,
                   eval_episodes=50 if task == "babyai" else 200)
    if "reward_update_every" in trainer:
        trainer["reward_update_every"] = 1024 if task == "babyai" else 500
    if trainer.get("warm_start"):
        trainer["warm_start"] = {**trainer["warm_start"], "episodes": 50, "epochs": 2}


def cell_config(base: dict[str, Any], cell: Cell, quick: bool) -> dict[str, Any]:
    """The base example with only the labels, the selection, the seed (and the output dir) changed."""
    config = copy.deepcopy(base)
    if config["reward"] == "preference-model" or config["reward"].get("name") != "preference-model":
        raise SystemExit(f"{TASKS[cell.task]['config']}: reward must be {{name: preference-model, params: ...}}")
    if cell.arm == "env":
        config["reward"] = {"name": "env"}
        config["trainer"].pop("reward_update_every", None)  # read only by a reward that learns
    else:
        params = config["reward"].setdefault("params", {})
        params["max_labels"] = cell.labels
        params["selection"] = cell.arm
    config["trainer"]["seed"] = cell.seed
    if quick:
        quick_budget(config, cell.task)
    return config


def config_hash(config: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in config.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def last_json(output: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON summary line in polyfuse's output")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_cell(cell: Cell, config: dict[str, Any], runs: Path, timeout: float) -> dict[str, Any]:
    run_dir = runs / cell.name
    if run_dir.exists():  # an interrupted run: start it again from scratch
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config = copy.deepcopy(config)
    config["trainer"]["output_dir"] = str(run_dir)
    path = run_dir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    result = subprocess.run([str(POLYFUSE), "run", str(path), "--json"], capture_output=True, text=True,
                            env=ENV, cwd=ROOT, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{cell.name} failed ({path}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    summary = last_json(result.stdout)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    curve = [(m["step"], m["eval/success"]) for m in metrics if "eval/success" in m]
    last_reward: dict[str, Any] = {}  # the last value of each reward/ metric (not every line has every key)
    for m in metrics:
        last_reward.update({k: v for k, v in m.items() if k.startswith("reward/")})
    for name in BULKY:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
    return {
        "task": cell.task, "arm": cell.arm, "labels": cell.labels, "seed": cell.seed,
        "success": summary["eval"].get("success"), "return": summary["eval"].get("return"),
        "eval_episodes": summary["eval"].get("episodes"), "steps": summary["steps"],
        "wall_s": round(elapsed, 1), "curve": curve, "start_success": curve[0][1] if curve else None,
        "labels_used": last_reward.get("reward/labels"),
        "reward_heldout_accuracy": last_reward.get("reward/heldout_accuracy"),
        "return_correlation": last_reward.get("reward/return_correlation"),
        "run_dir": str(run_dir),
    }


def grid(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for task in args.tasks:
        if task == "digits" or args.full_babyai:
            random_labels, active_labels = args.labels, args.labels
        else:
            random_labels, active_labels = args.babyai_labels, args.babyai_active_labels
        for seed in args.seeds:
            cells.append(Cell(task, "env", None, seed))
            cells += [Cell(task, "random", n, seed) for n in random_labels]
            cells += [Cell(task, arm, n, seed) for arm in ACTIVE_ARMS for n in active_labels]
    return cells


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def stderr(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["arm"], r["labels"]), []).append(r)
    env_means = {task: mean([r["success"] for r in rows]) for (task, arm, _), rows in groups.items()
                 if arm == "env"}
    rows = []
    for (task, arm, labels), members in sorted(groups.items(), key=lambda kv: (
            list(TASKS).index(kv[0][0]), ARMS.index(kv[0][1]), kv[0][2] or 0)):
        successes = [r["success"] for r in sorted(members, key=lambda r: r["seed"])]
        accuracies = [r["reward_heldout_accuracy"] for r in members if r["reward_heldout_accuracy"] is not None]
        correlations = [r["return_correlation"] for r in members if r.get("return_correlation") is not None]
        m = mean(successes)
        env = env_means.get(task)
        rows.append({
            "task": task, "arm": arm, "labels": labels, "seeds": len(members), "success": round(m, 4),
            "stderr": round(stderr(successes), 4), "per_seed": " ".join(f"{s:.3f}" for s in successes),
            "ratio_to_env": round(m / env, 3) if env and arm != "env" else None,
            "reward_heldout_accuracy": round(mean(accuracies), 3) if accuracies else None,
            "return_correlation": round(mean(correlations), 3) if correlations else None,
            "wall_s": round(mean([r["wall_s"] for r in members]), 1),
            "start_success": round(mean([r["start_success"] for r in members if r.get("start_success") is not None]
                                        or [float("nan")]), 3),
        })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [("| task | reward | labels | held-out success | ± s.e. | per seed | / env-reward | "
              "reward model: return corr. | held-out acc. | success at step 0 | s per run |"),
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    arm_names = {"env": "env reward", "random": "RLHF, random queries",
                 "disagreement": "RLHF, active queries (disagreement)", "entropy": "RLHF, active queries (entropy)"}
    for r in rows:
        def fmt(value, spec):
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
        lines.append(f"| {TASKS[r['task']]['title']} | {arm_names[r['arm']]} | {fmt(r['labels'], 'd') or '—'} | "
                     f"{r['success']:.3f} | {fmt(r['stderr'], '.3f')} | {r['per_seed']} | "
                     f"{fmt(r['ratio_to_env'], '.2f')} | {fmt(r['return_correlation'], '.2f')} | "
                     f"{fmt(r['reward_heldout_accuracy'], '.3f')} | "
                     f"{fmt(r['start_success'], '.3f')} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, style in (("random", "o-"), ("disagreement", "s--"), ("entropy", "^-.")):
            points = [r for r in rows if r["task"] == task and r["arm"] == arm]
            if points:
                errors = [0.0 if math.isnan(r["stderr"]) else r["stderr"] for r in points]
                ax.errorbar([r["labels"] for r in points], [r["success"] for r in points], yerr=errors,
                            fmt=style, capsize=3, label=f"RLHF, {'random' if arm == 'random' else f'active ({arm})'} queries")
        env = [r for r in rows if r["task"] == task and r["arm"] == "env"]
        if env:
            ax.axhline(env[0]["success"], color="black", linestyle=":", label="env reward")
            start = env[0]["start_success"]
            if not math.isnan(start) and start > 0.1:  # a warm start (BabyAI's behaviour cloning): where RL began
                ax.axhline(start, color="gray", linestyle="-.", linewidth=1, label="before RL (warm start)")
        ax.set_xscale("log")
        ax.set_xlabel("preference labels")
        ax.set_ylabel("held-out success")
        ax.set_ylim(0, 1.02)
        ax.set_title(TASKS[task]["title"])
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    rows = aggregate(results)
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        fields = ["task", "arm", "labels", "seed", "success", "start_success", "return", "eval_episodes", "steps", "labels_used",
                  "reward_heldout_accuracy", "return_correlation", "wall_s", "config_hash"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in sorted(results, key=lambda r: (r["task"], ARMS.index(r["arm"]), r["labels"] or 0, r["seed"])):
            writer.writerow(r)
    (out / "results.md").write_text(markdown(rows), encoding="utf-8")
    plot(rows, out / "label_efficiency.png")
    return rows


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="digits,babyai", type=lambda s: [t for t in s.split(",") if t],
                        help="comma-separated: digits, babyai (run in the order given)")
    parser.add_argument("--labels", default="100,300,1000", type=ints,
                        help="label budgets (DigitsVQA: random and active at each; BabyAI too with --full-babyai)")
    parser.add_argument("--babyai-labels", default="300,1000", type=ints, help="BabyAI budgets with random queries")
    parser.add_argument("--babyai-active-labels", default="1000", type=ints,
                        help="BabyAI budgets with active queries (selection: disagreement and entropy)")
    parser.add_argument("--full-babyai", action="store_true", help="BabyAI on the whole --labels grid, every selection")
    parser.add_argument("--seeds", default="0", type=ints, help="comma-separated seeds")
    parser.add_argument("--quick", action="store_true", help="tiny budgets and labels: a smoke run of a few minutes")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default /tmp/label_eff/results, /tmp/label_eff/quick with --quick)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default <out>/runs)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it counts as failed")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and the cells to run, run nothing")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: write the table and plot from the current results in <out>/cells")
    args = parser.parse_args()
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    if args.quick:
        args.labels, args.babyai_labels, args.babyai_active_labels = [30], [30], [30]
    out = args.out or Path("/tmp/label_eff/quick" if args.quick else "/tmp/label_eff/results")
    runs = args.runs or out / "runs"
    (out / "cells").mkdir(parents=True, exist_ok=True)

    bases = {task: load_base(task) for task in args.tasks}
    if "digits" in bases:
        dqn = yaml.safe_load((ROOT / "examples" / "digits_vqa_dqn.yaml").read_text(encoding="utf-8"))["optimizer"]
        same = dqn == bases["digits"]["optimizer"]
        print(f"DigitsVQA: env-reward and RLHF arms share examples/digits_vqa_rlhf.yaml's optimizer "
              f"({'identical to' if same else 'differs from'} examples/digits_vqa_dqn.yaml's)", flush=True)

    cells = grid(args)
    results = []
    todo = []
    for cell in cells:
        config = cell_config(bases[cell.task], cell, args.quick)
        digest = config_hash(config)
        path = out / "cells" / f"{cell.name}_{digest}.json"
        todo.append((cell, config, digest, path))
    pending = [c for c in todo if not c[3].exists()]
    print(f"{len(todo)} cells, {len(todo) - len(pending)} already done, {len(pending)} to run; results in {out}",
          flush=True)
    if args.dry_run:
        for cell, _, digest, path in todo:
            print(f"  {'done' if path.exists() else 'todo'}  {cell.name}  ({digest})")
        return
    started = time.perf_counter()
    for n, (cell, config, digest, path) in enumerate(todo, 1):
        if args.report and not path.exists():
            continue
        if path.exists():
            results.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        print(f"[{n}/{len(todo)}] {cell.name} ...", end=" ", flush=True)
        result = run_cell(cell, config, runs, args.timeout)
        result["config_hash"] = digest
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)  # the cell counts as done only once its whole result is written
        results.append(result)
        print(f"success {result['success']:.3f} ({result['wall_s']:.0f} s, "
              f"{time.perf_counter() - started:.0f} s so far)", flush=True)

    # The report covers every result in cells/ that is current (its config hash matches the example as it is
    # now) for the tasks asked: also seeds or budgets run by an earlier invocation with other options.
    seen = {r["config_hash"] + r["task"] + r["arm"] + str(r["labels"]) + str(r["seed"]) for r in results}
    for path in sorted((out / "cells").glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        key = r.get("config_hash", "") + r["task"] + r["arm"] + str(r["labels"]) + str(r["seed"])
        if r["task"] not in bases or key in seen:
            continue
        if config_hash(cell_config(bases[r["task"]], Cell(r["task"], r["arm"], r["labels"], r["seed"]),
                                   args.quick)) == r.get("config_hash"):
            results.append(r)
            seen.add(key)
    if not results:
        print("no current results to report")
        return
    rows = write_outputs(results, out)
    print()
    print(markdown(rows))
    for task in args.tasks:
        env = [r for r in rows if r["task"] == task and r["arm"] == "env"]
        if not env:
            continue
        ratios = ", ".join(f"{r['arm']} {r['labels']}: {r['ratio_to_env']:.2f}" for r in rows
                           if r["task"] == task and r["arm"] != "env")
        print(f"{TASKS[task]['title']}: RLHF success / env-reward success ({env[0]['success']:.3f}): {ratios}")
    print(f"\nwrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'label_efficiency.png'}")


if __name__ == "__main__":
    sys.exit(main())
