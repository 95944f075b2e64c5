"""``polyfuse eval``: a trained run's policy on held-out episodes, greedy and sampled, with 95% intervals.

On the run's own environment by default (its ``trainer.eval_suite`` when it
has one), or on others with the observations and actions it was trained on
(``--env``, zero-shot transfer: a BabyAI policy on other levels). Rounds of
episodes are spread over processes, one torch thread each; every round is
seeded by its position, so the figures do not depend on how many processes
played them, and equal those the trainer reports for the same checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyfuse.config import MAX_EPISODES, EnvConfig, PipelineConfig, env_label
from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry

MODE_CHOICES = {"greedy": ("greedy",), "sampled": ("sampled",), "both": ("greedy", "sampled")}
RECORDED_EPISODES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run's output_dir (e.g. runs/latest) or a checkpoint folder in it")
    parser.add_argument("--env", action="append", metavar="ID",
                        help="evaluate on this environment instead (repeatable: a suite, with mean and IQM); "
                             "default: the run's env, or its trainer.eval_suite")
    parser.add_argument("--episodes", type=int, help="episodes per environment and mode (default: the run's "
                                                       "trainer.eval_episodes)")
    parser.add_argument("--mode", choices=sorted(MODE_CHOICES), default="both",
                        help="greedy (most likely action), sampled (the policy's distribution), or both (default)")
    parser.add_argument("--workers", type=int, help="processes (default: one per CPU core, at most one per round "
                                                      "of 32 episodes)")
    parser.add_argument("--record", metavar="DIR", help="also write the first episodes of each environment and "
                                                         "mode as GIFs into DIR")
    parser.add_argument("--record-episodes", type=int, default=RECORDED_EPISODES,
                        help=f"episodes to record per environment and mode (default {RECORDED_EPISODES})")
    parser.add_argument("--json", action="store_true", help="end with the results as one JSON line")


@dataclass(frozen=True)
class Target:
    """An environment to evaluate on; ``name`` is None when it is evaluated alone (no suite)."""

    name: str | None
    env: EnvConfig

    @property
    def label(self) -> str:
        return self.name or env_label(self.env.id)


@dataclass(frozen=True)
class Job:
    """What every worker process needs to play any round."""

    location: Path
    targets: tuple[Target, ...]
    episodes: int
    disabled: tuple[str, ...]
    record: Path | None
    record_episodes: int


def command(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.run import format_eval
    from polyfuse.training.eval_report import eval_metrics, nest
    from polyfuse.training.saved_policy import checkpoint_folder, saved_config

    location = checkpoint_folder(Path(args.run))
    config = saved_config(location, registry)
    targets = _targets(args.env, config)
    episodes = config.trainer.eval_episodes if args.episodes is None else args.episodes
    if not 0 < episodes <= MAX_EPISODES:
        raise PolyfuseError(f"--episodes must be in [1, {MAX_EPISODES}], got {episodes}")
    if args.record_episodes < 0:
        raise PolyfuseError(f"--record-episodes must not be negative, got {args.record_episodes}")
    if args.workers is not None and args.workers <= 0:
        raise PolyfuseError(f"--workers must be positive, got {args.workers}")
    modes = _ordered(MODE_CHOICES[args.mode], config.trainer.eval_modes)
    _check_targets(config, targets)
    disabled = tuple(switch[3:] for switch in getattr(args, "plugin_switches", []) if switch.startswith("no:"))
    job = Job(location, targets, episodes, disabled, Path(args.record) if args.record else None, args.record_episodes)
    with contextlib.redirect_stdout(sys.stderr):  # environments that print (minigrid's level generator) stay off stdout
        episodes_by_target, recordings = _play(job, modes, args.workers)
    metrics = eval_metrics({t.name: episodes_by_target[i] for i, t in enumerate(targets)}, modes)
    env_ids = [target.env.id for target in targets]
    result = {
        **nest(metrics), "primary": modes[0], "env": env_ids if len(env_ids) > 1 else env_ids[0],
        "run": str(args.run), "checkpoint": str(location), "step": _saved_step(location),
        "recordings": [str(path) for path in recordings],
    }
    print("\n".join(format_eval(result)))
    if recordings:
        print(f"recordings: {len(recordings)} GIFs in {job.record}")
    if args.json:
        print(json.dumps(result))
    return 0


def _saved_step(location: Path) -> int:
    from polyfuse.training.checkpoint import read_checkpoint_tree

    return int(read_checkpoint_tree(location).get("trainer", {}).get("steps", 0))


def _targets(env_ids: list[str] | None, config: PipelineConfig) -> tuple[Target, ...]:
    """``--env`` ids (the run's own keeps its kwargs), else the run's suite, else its env alone."""
    assert config.env is not None
    if env_ids:
        unique = list(dict.fromkeys(env_ids))
        envs = [config.env if env_id == config.env.id else EnvConfig(id=env_id) for env_id in unique]
        if len(envs) == 1:
            return (Target(None, envs[0]),)
        targets = tuple(Target(env_label(env.id), env) for env in envs)
        labels = [t.name for t in targets]
        if len(set(labels)) != len(labels):
            raise PolyfuseError(f"--env: two environments share the name {labels}; evaluate them one at a time")
        return targets
    suite = config.trainer.eval_suite
    if suite:
        return tuple(Target(env.label, EnvConfig(id=env.id, kwargs=env.kwargs)) for env in suite)
    return (Target(None, config.env),)


def _ordered(modes: tuple[str, ...], configured: list[str]) -> tuple[str, ...]:
    """The modes asked for, the run's primary mode first."""
    return tuple(sorted(modes, key=lambda mode: configured.index(mode) if mode in configured else len(configured)))


def _check_targets(config: PipelineConfig, targets: tuple[Target, ...]) -> None:
    """Every target gives the observations and actions the policy was trained on (before any process starts)."""
    from polyfuse.envs import eval_kwargs, make_env
    from polyfuse.training.compatibility import check_compatible

    assert config.env is not None
    trained = make_env(config.env.id, config.env.kwargs)
    try:
        for target in targets:
            env = make_env(target.env.id, eval_kwargs(target.env.id, target.env.kwargs))
            try:
                check_compatible(config.modalities, trained.observation_space, trained.action_space,
                                 env.observation_space, env.action_space, target.env.id)
            finally:
                env.close()
    finally:
        trained.close()


def _play(job: Job, modes: tuple[str, ...], workers: int | None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Every round of every target and mode, in processes; the episodes in order, and the recordings written."""
    from tqdm import tqdm

    from polyfuse.training.evaluation import MAX_PARALLEL, Episodes

    rounds = -(-job.episodes // min(job.episodes, MAX_PARALLEL))
    units = [(t, mode, r) for t in range(len(job.targets)) for mode in modes for r in range(rounds)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(units)))
    parts: dict[tuple[int, str, int], Any] = {}
    recordings: list[Path] = []
    total = job.episodes * len(job.targets) * len(modes)
    with tqdm(total=total, unit="episode", desc="eval", file=sys.stderr, dynamic_ncols=True) as bar:
        for unit, (part, written) in _results(job, units, workers):
            parts[unit] = part
            recordings += written
            bar.update(len(part))
    by_target: list[dict[str, Any]] = []
    for index in range(len(job.targets)):
        by_target.append({})
        for mode in modes:
            episodes = Episodes()
            for r in range(rounds):
                episodes.extend(parts[(index, mode, r)])
            by_target[index][mode] = episodes
    return by_target, sorted(recordings)


def _results(job: Job, units: list[tuple[int, str, int]], workers: int) -> Any:
    """(unit, (episodes, recordings)) as each round finishes: in this process, or in ``workers`` processes."""
    if workers == 1:
        _start_worker(job)
        try:
            for unit in units:
                yield unit, _play_unit(unit)
        finally:
            _stop_worker()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(job,))
    try:
        futures = {pool.submit(_play_unit, unit): unit for unit in units}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- in each worker process ------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _start_worker(job: Job) -> None:
    """Load the policy once per process, one torch thread, evaluators made as their targets come up."""
    import torch

    from polyfuse.training.saved_policy import load_saved_policy

    torch.set_num_threads(1)
    sys.stdout = sys.stderr  # stdout is the parent's results; what environments print goes to stderr
    registry = Registry.load(disabled=job.disabled)
    _worker.update(job=job, policy=load_saved_policy(job.location, registry), evaluators={})


def _stop_worker() -> None:
    for evaluator in _worker.get("evaluators", {}).values():
        evaluator.close()
    if "policy" in _worker:
        _worker["policy"].close()
    _worker.clear()


def _play_unit(unit: tuple[int, str, int]) -> tuple[Any, list[Path]]:
    from polyfuse.envs import action_names
    from polyfuse.training.evaluation import Evaluator
    from polyfuse.training.recording import EpisodeRecorder

    job: Job = _worker["job"]
    index, mode, round_index = unit
    target = job.targets[index]
    evaluators = _worker["evaluators"]
    if index not in evaluators:
        evaluators[index] = Evaluator(target.env, job.episodes)
    recorder = None
    if job.record is not None and round_index == 0 and job.record_episodes > 0:
        recorder = EpisodeRecorder(job.record, f"{target.label}-{mode}", job.record_episodes,
                                   action_names(target.env.id, target.env.kwargs))
    episodes = evaluators[index].play_round(_worker["policy"].optimizer, mode, round_index, recorder)
    return episodes, (recorder.written if recorder else [])
