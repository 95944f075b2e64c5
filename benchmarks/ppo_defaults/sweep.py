"""Sweep PPO's default hyperparameters on DigitsVQA and BabyAI GoToLocal (issue 8, "PPO defaults that learn").

Every run is a ``polyfuse run CONFIG --json`` subprocess, one at a time (the
machines this was written on have 2 CPU cores; parallel runs would distort
the wall times and each other). Configs are built here from a base pipeline
(``BASES``) and a set of optimizer params (``CANDIDATES``, or a grid in
``STAGES``); the summary line of each run is appended to a JSONL file, and
runs already in that file are skipped, so an interrupted sweep resumes.

Every candidate spells out all the swept params, so results do not depend on
the defaults of the installed polyfuse-ppo, except ``plugin-defaults``, which
passes no params at all (``optimizer: ppo``): whatever the installed plugin's
defaults are.

    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage screen1
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage screen2
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage confirm
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage babyai
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage kl
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --stage milder
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --table          # print the table only
    .venv/bin/python benchmarks/ppo_defaults/sweep.py --base digits --candidate new --seeds 3,4

Run polyfuse from another checkout by putting its sources first on PYTHONPATH
(``--polyfuse`` names the CLI to run; default: the ``polyfuse`` next to this
Python).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# --- base pipelines ---------------------------------------------------------------------------------

DIGITS = {  # README's inline pipeline, as a new user copies it (only the optimizer params change)
    "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
    "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
    "fuser": {"name": "gated", "params": {"hidden_dim": 128}},
    "reward": "env",
    "optimizer": {"name": "ppo"},
    "trainer": {"total_steps": 40_000, "seed": 0},
}

BABYAI = {  # examples/babyai_goto_local_ppo.yaml without its optimizer params, at a budget we can afford
    "env": {"id": "BabyAI-GoToLocalS6N2-v0", "num_envs": 16},
    "modalities": {
        "image": {"encoder": {"name": "small-cnn", "params": {"mode": "grid"}}},
        "mission": {"encoder": "sbert"},
        "direction": {"encoder": "onehot"},
    },
    "fuser": {"name": "concat", "params": {"output_dim": 128}},
    "reward": "env",
    "optimizer": {"name": "ppo"},
    "trainer": {"total_steps": 100_000, "seed": 0, "eval_every": 25_000, "eval_episodes": 200,
                "checkpoint_every": 100_000},
}

BABYAI_WARM = copy.deepcopy(BABYAI)
BABYAI_WARM["trainer"]["warm_start"] = {"episodes": 2000, "epochs": 10, "learning_rate": 0.001}

BASES: dict[str, dict[str, Any]] = {"digits": DIGITS, "babyai": BABYAI, "babyai-warm": BABYAI_WARM}

# --- optimizer params -------------------------------------------------------------------------------

OLD = {  # polyfuse-ppo's defaults before issue 8
    "learning_rate": 1e-3, "n_steps": 64, "n_epochs": 4, "batch_size": 64, "ent_coef": 0.01,
    "activation": "tanh", "ortho_init": True, "hidden_sizes": [64],
}


def params(**changes: Any) -> dict[str, Any]:
    """The old defaults with ``changes``: every swept param spelled out."""
    return {**OLD, **changes}


CANDIDATES: dict[str, dict[str, Any] | None] = {
    "plugin-defaults": None,  # optimizer: ppo, no params: the installed plugin's defaults
    "old": params(),
    "readme-lr3e-4": params(learning_rate=3e-4),  # the README's pipeline before issue 8 (old defaults + lr)
}


def grid(prefix: str, center: dict[str, Any], axes: dict[str, list[Any]]) -> list[str]:
    """Register the Cartesian product of ``axes`` around ``center``; returns the candidate names."""
    names = []
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        change = dict(zip(keys, values))
        name = prefix + ",".join(f"{_short(k)}={_value(v)}" for k, v in change.items())
        CANDIDATES[name] = {**center, **change}
        names.append(name)
    return names


def one_at_a_time(prefix: str, center: dict[str, Any], axes: dict[str, list[Any]]) -> list[str]:
    """Register ``center`` changed in one param at a time; returns the candidate names."""
    names = []
    for key, values in axes.items():
        for value in values:
            name = f"{prefix}{_short(key)}={_value(value)}"
            CANDIDATES[name] = {**center, key: value}
            names.append(name)
    return names


SHORT = {"learning_rate": "lr", "activation": "act", "ortho_init": "ortho", "n_steps": "nsteps",
         "n_epochs": "epochs", "batch_size": "batch", "ent_coef": "ent", "hidden_sizes": "hidden"}


def _short(key: str) -> str:
    return SHORT.get(key, key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "x".join(map(str, value)) or "none"
    return str(value)


# Stage 1: head activation x ortho init x learning rate, at the old rollout settings (DigitsVQA, seed 0).
SCREEN1 = grid("", OLD, {"activation": ["tanh", "relu"], "ortho_init": [True, False],
                         "learning_rate": [3e-4, 1e-3, 3e-3]})

# Stage 2: around the best of stage 1 (relu, orthogonal init, lr 3e-3: 0.93), rollout size, epochs, batch
# size and entropy bonus one at a time (DigitsVQA, seed 0; the centre also on seeds 1 and 2).
CENTER2 = params(activation="relu", ortho_init=True, learning_rate=3e-3)
CANDIDATES["relu,lr=3e-3"] = CENTER2
SCREEN2 = one_at_a_time("relu,lr=3e-3: ", CENTER2, {
    "n_steps": [16, 32, 128], "n_epochs": [8], "batch_size": [32, 128], "ent_coef": [0.0, 0.001, 0.03],
})

# Stage 3: the most promising combinations, on seeds 0-2 (DigitsVQA), beside the old defaults.
CANDIDATES["A: relu,lr=3e-3,epochs=8"] = params(activation="relu", learning_rate=3e-3, n_epochs=8)
CANDIDATES["B: relu,lr=1e-3,nsteps=128,epochs=10"] = params(activation="relu", learning_rate=1e-3, n_steps=128,
                                                             n_epochs=10)
# (B was stopped after two seeds, clearly behind A, to leave the time to BabyAI.)

# Stage 4: A learns DigitsVQA but moves BabyAI's policy too far per rollout (approx KL 0.05-0.16, clip
# fraction 0.5, vs 0.01-0.03 for the old defaults): A with an early stop on KL.
CANDIDATES["E: relu,lr=3e-3,epochs=8,target_kl=0.03"] = params(activation="relu", learning_rate=3e-3, n_epochs=8,
                                                               target_kl=0.03)

# Stage 5: target_kl stops DigitsVQA and BabyAI alike after a few minibatches (the per-minibatch KL estimate
# is noisy): instead, milder steps than A: A's lr with the old 4 epochs on BabyAI, A's epochs with lr 1e-3.
CANDIDATES["G: relu,lr=1e-3,epochs=8"] = params(activation="relu", learning_rate=1e-3, n_epochs=8)
CANDIDATES["new"] = CANDIDATES["G: relu,lr=1e-3,epochs=8"]  # the defaults chosen (see README.md)

STAGES: dict[str, list[tuple[str, str, list[int]]]] = {  # (base, candidate, seeds)
    "screen1": [("digits", name, [0]) for name in SCREEN1],
    "screen2": [("digits", "relu,lr=3e-3", [1, 2])] + [("digits", name, [0]) for name in SCREEN2],
    "confirm": [("digits", "old", [1, 2]), ("digits", "readme-lr3e-4", [1, 2])]
    + [("digits", "A: relu,lr=3e-3,epochs=8", [0, 1, 2]), ("digits", "B: relu,lr=1e-3,nsteps=128,epochs=10", [0, 1])],
    "babyai": [(base, name, [0]) for base in ["babyai-warm", "babyai"]
               for name in ["old", "A: relu,lr=3e-3,epochs=8"]],
    "kl": [("digits", "E: relu,lr=3e-3,epochs=8,target_kl=0.03", [0]),
           ("babyai", "E: relu,lr=3e-3,epochs=8,target_kl=0.03", [0])],
    "milder": [("digits", "G: relu,lr=1e-3,epochs=8", [0]), ("babyai", "relu,lr=3e-3", [0]),
               ("babyai", "G: relu,lr=1e-3,epochs=8", [0]), ("digits", "G: relu,lr=1e-3,epochs=8", [1, 2]),
               ("babyai-warm", "G: relu,lr=1e-3,epochs=8", [0])],
}

# --- running ----------------------------------------------------------------------------------------


def build_config(base: str, candidate: str, seed: int, output_dir: Path) -> dict[str, Any]:
    config = copy.deepcopy(BASES[base])
    optimizer_params = CANDIDATES[candidate]
    config["optimizer"] = "ppo" if optimizer_params is None else {"name": "ppo", "params": optimizer_params}
    config["trainer"]["seed"] = seed
    config["trainer"]["output_dir"] = str(output_dir)
    return config


def run_one(base: str, candidate: str, seed: int, polyfuse: list[str], workdir: Path) -> dict[str, Any]:
    slug = f"{base}__{candidate}__s{seed}".replace(" ", "").replace(":", "").replace(",", "_").replace("=", "")
    output_dir = workdir / "runs" / slug
    config = build_config(base, candidate, seed, output_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=workdir, delete=False, prefix=slug) as file:
        yaml.safe_dump(config, file, sort_keys=False)
    env = {**os.environ}
    for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}.items():
        env.setdefault(key, value)
    start = time.perf_counter()
    process = subprocess.run([*polyfuse, "run", file.name, "--json"], capture_output=True, text=True, env=env,
                             check=False)
    elapsed = time.perf_counter() - start
    record: dict[str, Any] = {"base": base, "candidate": candidate, "seed": seed,
                              "params": CANDIDATES[candidate], "process_s": round(elapsed, 1)}
    if process.returncode != 0:
        record["error"] = (process.stderr or process.stdout)[-2000:]
        return record
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    record.update(steps=summary["steps"], success=summary["eval"]["success"],
                  eval_episodes=summary["eval"]["episodes"], train_success=summary["train"]["success"],
                  wall_time_s=summary["wall_time_s"], curve=_curve(output_dir / "metrics.jsonl"))
    return record


def _curve(metrics: Path) -> list[list[float]]:
    """Held-out success at each evaluation: [[step, success], ...]."""
    points = []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "eval":
            points.append([row["step"], row["eval/success"]])
    return points


def load(results: Path) -> list[dict[str, Any]]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per base and set of params (candidates with equal params share a line, names
    joined by " = "), held-out success per seed, mean, mean wall time of the training run."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if "success" in row:
            key = (row["base"], json.dumps(row["params"], sort_keys=True))
            groups.setdefault(key, {})[row["seed"]] = row
            if row["candidate"] not in names.setdefault(key, []):
                names[key].append(row["candidate"])
    seeds = sorted({seed for group in groups.values() for seed in group})
    lines = ["| base | candidate | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | wall s |",
             "| --- | --- |" + " ---: |" * (len(seeds) + 2)]
    for key, group in groups.items():
        cells = [f"{group[s]['success']:.3f}" if s in group else "" for s in seeds]
        mean = sum(r["success"] for r in group.values()) / len(group)
        wall = sum(r["wall_time_s"] for r in group.values()) / len(group)
        lines.append(f"| {key[0]} | {' = '.join(names[key])} | " + " | ".join(cells) + f" | {mean:.3f} | {wall:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=list(STAGES), action="append", default=[])
    parser.add_argument("--base", choices=list(BASES))
    parser.add_argument("--candidate", action="append", default=[], help="a name from CANDIDATES")
    parser.add_argument("--seeds", default="0", help="comma-separated, with --base/--candidate")
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ppo-sweep")
    parser.add_argument("--polyfuse", default=str(Path(sys.executable).parent / "polyfuse"))
    parser.add_argument("--again", action="store_true", help="rerun runs already in the results file")
    parser.add_argument("--table", action="store_true", help="only print the table of the results file")
    parser.add_argument("--list", action="store_true", help="list the candidates and their params")
    args = parser.parse_args()
    if args.list:
        for name, value in CANDIDATES.items():
            print(f"{name}: {value}")
        return 0
    plan: list[tuple[str, str, int]] = []
    for stage in args.stage:
        plan += [(base, name, seed) for base, name, seeds in STAGES[stage] for seed in seeds]
    if args.base:
        for name in args.candidate or ["plugin-defaults"]:
            if name not in CANDIDATES:
                parser.error(f"unknown candidate {name!r}; --list shows them")
            plan += [(args.base, name, int(seed)) for seed in args.seeds.split(",")]
    if not args.table:
        done = {(r["base"], r["candidate"], r["seed"]) for r in load(args.results) if "success" in r}
        for index, (base, name, seed) in enumerate(plan, 1):
            if (base, name, seed) in done and not args.again:
                continue
            record = run_one(base, name, seed, args.polyfuse.split(), args.workdir)
            with args.results.open("a") as file:
                file.write(json.dumps(record) + "\n")
            status = f"{record['success']:.3f} in {record['wall_time_s']:.0f} s" if "success" in record \
                else "FAILED: " + record["error"].strip().splitlines()[-1]
            print(f"[{index}/{len(plan)}] {base} | {name} | seed {seed}: {status}", flush=True)
    print(table(load(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
