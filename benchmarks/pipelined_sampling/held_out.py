"""Held-out success of polyfuse's PPO and SB3's PPO over many seeds, on more held-out episodes.

``compare.py`` evaluates on 200 episodes, where one seed's figure moves by
about 0.025 with the episodes drawn; here each contender is trained once per
seed (100k steps, compare.py's settings; polyfuse synchronous or pipelined, SB3
DummyVecEnv on polyfuse's cached MiniGrid view: the same observations, so
the same runs, faster) and evaluated greedily on the first ``--episodes``
held-out episodes (the same for both). Prints one line per run and, at the
end, each contender's mean and standard deviation over seeds and the
difference of the means with its 95% interval (Welch's t). ``--param``
overrides polyfuse's optimizer params, e.g. ``--param vf_coef=1.0``. No
timing here: held-out success does not depend on the machine's load.

    .venv/bin/python benchmarks/pipelined_sampling/held_out.py --seeds 10 --episodes 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import polyfuse, sb3  # noqa: E402


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% interval (Welch's t)."""
    from scipy import stats

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * (va + vb) ** 0.5
    diff = statistics.fmean(a) - statistics.fmean(b)
    return diff, diff - half, diff + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds first-seed .. first-seed + N - 1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                        help="a polyfuse optimizer param override (repeatable)")
    parser.add_argument("--vectorization", choices=["sync", "pipelined"], default="sync",
                        help="polyfuse's env.vectorization (pipelined: one worker)")
    parser.add_argument("--no-sb3", action="store_true", help="polyfuse only")
    args = parser.parse_args()
    params = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.param)}

    ours = f"polyfuse {args.vectorization}"
    workers = 1 if args.vectorization == "pipelined" else None
    results: dict[str, list[float]] = {ours: [], "SB3 DummyVecEnv": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs = {ours: lambda: polyfuse(args.steps, seed, args.episodes, args.vectorization, workers, params)}
        if not args.no_sb3:
            runs["SB3 DummyVecEnv"] = lambda: sb3(args.steps, seed, args.episodes, "dummy", "indexed")
        for name, run in runs.items():
            success = run()["success"]
            results[name].append(success)
            print(f"seed {seed}  {name:<18} held-out success {success:.3f} ({args.episodes} episodes)",
                  file=sys.stderr, flush=True)
    summary = {"steps": args.steps, "episodes": args.episodes, "params": params,
               "first_seed": args.first_seed, "success_per_seed": results}
    for name, values in results.items():
        if len(values) > 1:
            print(f"{name:<18} mean {statistics.fmean(values):.3f}  sd {statistics.stdev(values):.3f}  "
                  f"({len(values)} seeds)")
    mine, theirs = results[ours], results["SB3 DummyVecEnv"]
    if len(mine) > 1 and len(theirs) > 1:
        diff, low, high = welch_interval(mine, theirs)
        summary["difference"] = {"mean": diff, "low": low, "high": high}
        print(f"polyfuse - SB3: {diff:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}]")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
