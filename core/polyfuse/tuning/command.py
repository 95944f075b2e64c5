"""The ``polyfuse tune`` command: arguments, the study's set-up, its summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError
from polyfuse.overrides import add_override_argument
from polyfuse.registry import Registry

SAMPLER_CHOICES = ("tpe", "random", "qmc", "gp", "cmaes")
PRUNER_CHOICES = ("median", "percentile", "hyperband", "successive-halving", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the pipeline config whose settings are searched (trial 0 runs it as is)")
    add_override_argument(parser)
    parser.add_argument("--space", required=True, help="YAML mapping config paths to distributions, e.g. "
                        "'optimizer.params.learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}'")
    parser.add_argument("--trials", type=int, required=True, help="trials the study should hold; re-running the "
                        "command continues an interrupted study up to this many")
    parser.add_argument("-o", "--output", help="folder for the trials' runs, the study and the reports (default: "
                        "runs/tune-<config name>)")
    parser.add_argument("--storage", help="Optuna storage URL shared by tuners on several processes or machines "
                        "(default: sqlite:///OUTPUT/study.db)")
    parser.add_argument("--study-name", help="the study's name in the storage (default: tune-<config name>)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once, each in its own process with "
                        "one torch thread (default 1)")
    parser.add_argument("--sampler", choices=SAMPLER_CHOICES, default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument("--pruner", choices=PRUNER_CHOICES, default="median",
                        help="stops unpromising trials at their held-out evaluations (default median; none: never)")
    parser.add_argument("--metric", default="eval/success", help="the eval record's key to optimise, from the "
                        "run's last held-out evaluation (default eval/success)")
    parser.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    parser.add_argument("--steps", type=int, help="override trainer.total_steps: every trial's budget")
    parser.add_argument("--seed", type=int, help="seeds the sampler (each trial trains with trainer.seed)")
    parser.add_argument("--json", action="store_true", help="end with the best trial as one JSON line")


def tune(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.config import read_pipeline_data, read_yaml
    from polyfuse.tuning import report
    from polyfuse.tuning import study as studies
    from polyfuse.tuning.space import load_space

    optuna = studies.import_optuna()
    _check_numbers(args)
    base = read_pipeline_data(args.config, args.overrides)
    if args.steps is not None:
        trainer = base.setdefault("trainer", {})
        if isinstance(trainer, dict):
            trainer["total_steps"] = args.steps
    stem = Path(args.config).stem
    output = Path(args.output or f"runs/tune-{stem}")
    output.mkdir(parents=True, exist_ok=True)
    space = load_space(Path(args.space), base, registry, output / studies.TRIALS_DIR)
    settings = studies.StudySettings(
        storage=args.storage or f"sqlite:///{output.resolve()}/study.db", name=args.study_name or f"tune-{stem}",
        metric=args.metric, direction=args.direction, sampler=args.sampler, pruner=args.pruner, seed=args.seed)
    fingerprint = json.loads(json.dumps({"config": base, "space": read_yaml(Path(args.space)),
                                         "metric": args.metric, "direction": args.direction}, default=str))
    study = studies.open_study(optuna, settings, fingerprint)
    studies.recover_interrupted(optuna, study)
    studies.enqueue_baseline(study, space)
    print(f"tuning {args.config} over {len(space.entries)} settings: {args.trials} trials, {args.jobs} at a time, "
          f"{args.sampler} sampler, {args.pruner} pruner; study {settings.name!r} in {settings.storage}; "
          f"runs in {output / studies.TRIALS_DIR}", file=sys.stderr)

    def after_trial() -> None:
        report.write_report(study, space, output, args.metric, args.config)

    finished = studies.Tuner(study, space, registry, output, args.metric, args.trials, args.jobs, after_trial).run()
    notes = report.write_report(study, space, output, args.metric, args.config)
    summary = _summary(study, output, args.metric)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(_describe(summary, args.metric, finished))
    if args.json:
        print(json.dumps(summary))
    return 0 if finished else 130


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--trials", args.trials), ("--jobs", args.jobs), ("--steps", args.steps)):
        if value is not None and value <= 0:
            raise PolyfuseError(f"{flag} must be positive, got {value}")
    if args.jobs > (os.cpu_count() or 1) * 4:
        raise PolyfuseError(f"--jobs {args.jobs}: more than 4 trials per CPU only slows each; use at most "
                            f"{(os.cpu_count() or 1) * 4}")


def _summary(study: Any, output: Path, metric: str) -> dict[str, Any]:
    from polyfuse.tuning.report import BEST_FILE, PLOTS
    from polyfuse.tuning.study import best_trial

    best = best_trial(study)
    baseline = next((t for t in study.get_trials(deepcopy=False)
                     if t.user_attrs.get("baseline") and t.value is not None), None)
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return {
        "metric": metric,
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
        "baseline": None if baseline is None else {"trial": baseline.number, "value": baseline.value},
        "trials": states,
        "paths": {"best": str(output / BEST_FILE) if best is not None else None,
                  "table": str(output / "trials.md"), "csv": str(output / "trials.csv"),
                  **{name: str(output / file) for name, file in PLOTS.items() if (output / file).is_file()}},
    }


def _describe(summary: dict[str, Any], metric: str, finished: bool) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in summary["trials"].items())
    lines = [f"{'study' if finished else 'interrupted study'}: {counts}"]
    best, baseline = summary["best"], summary["baseline"]
    if best is None:
        lines.append("no trial completed: see trials.md for the errors")
    else:
        lines.append(f"best: trial {best['trial']}, {metric} {best['value']:.4g}"
                     + (f" (the config's own values, trial {baseline['trial']}: {baseline['value']:.4g})"
                        if baseline else ""))
        lines += [f"  {path}: {value}" for path, value in best["params"].items()]
        lines.append(f"best config: {summary['paths']['best']}  (polyfuse run {summary['paths']['best']})")
    lines.append(f"table:       {summary['paths']['table']}")
    if not finished:
        lines.append("re-run the same command to continue the study")
    return "\n".join(lines)
