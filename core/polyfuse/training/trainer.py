"""The trainer: builds a pipeline from a validated config and trains it to its step budget.

It owns the run (seeding, threads, environments, reward source, progress,
held-out evaluation, metrics, checkpoints, resume, signals) and leaves the
learning to the RL optimizer plugin, through :mod:`polyfuse.training.api`.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from polyfuse.components import Kind
from polyfuse.config import EnvConfig, PipelineConfig, config_differences, validate_pipeline
from polyfuse.envs import action_names, check_env_id, make_vector_env
from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.network import NetworkFactory
from polyfuse.registry import Registry, default_registry
from polyfuse.rewards import RewardSource, RunContext
from polyfuse.training.api import Budget, Pipeline, RLOptimizer
from polyfuse.training.vector_env import EpisodeRecord, TrackedVectorEnv
from polyfuse.training.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_PATHS,
    load_latest_checkpoint,
    save_checkpoint,
)
from polyfuse.training.compatibility import check_compatible
from polyfuse.training.continuation import (
    check_fits,
    check_gateable,
    check_output_dir,
    load_policy_from,
    served_checkpoint,
)
from polyfuse.training.distributed import (
    Ranks, barrier, check_rank_components, exchange, rank_seed, rank_share, ranks,
)
from polyfuse.training.eval_report import eval_metrics, nest
from polyfuse.training.evaluation import Evaluator
from polyfuse.training.lock import RunLock
from polyfuse.training.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricsLog, json_number, read_metrics
from polyfuse.training.plotting import PLOT_FILE, plot_learning_curve
from polyfuse.training.seeding import check_seed, derive_seed, rng_state, seed_everything, set_rng_state
from polyfuse.training.warm_start import behaviour_cloning, collect_demonstrations

SUMMARY_FILE = "summary.json"
RUN_FILES = (METRICS_FILE, SUMMARY_FILE, PLOT_FILE, TENSORBOARD_DIR, *CHECKPOINT_PATHS)
EPISODE_WINDOW = 100
"""Train return and success are means over this many most recent episodes."""
LOG_POINTS = 200
"""About this many train lines per run in metrics.jsonl, however small the optimizer's iterations."""
RESUMABLE_CHANGES = frozenset({"trainer.total_steps", "trainer.output_dir", "trainer.promotion.promote",
                               "trainer.promotion.tolerance", "env.ray.address", "env.ray.object_store_mb"})
"""Config fields a resumed run may change: train longer, from a moved folder, judge the candidate again
(the promotion gate's settings: e.g. promote after a --no-promote run), or run its Ray env runners elsewhere
(a run started on a laptop's local instance resumed on a cluster: where runners run changes nothing learnt)."""
STALLED_ITERATIONS = 1_000_000
"""Iterations in a row that may leave the budget's counter unchanged while other counters move (DQN
filling its replay buffer one env step at a time before its first gradient step) before the run is
stopped as stalled: far beyond any warm-up, so only a budget unit the optimizer never counts trips it."""


@dataclass
class RunState:
    """What the trainer itself must carry across a checkpoint; ``steps`` counts the budget's unit."""

    steps: int = 0
    episodes: int = 0
    recent: deque[EpisodeRecord] = field(default_factory=lambda: deque(maxlen=EPISODE_WINDOW))
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    env_time_s: float = 0.0
    last_eval: dict[str, float] | None = None
    last_eval_step: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "episodes": self.episodes,
            "recent": [[e.episode_return, e.length, e.success] for e in self.recent],
            "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s,
            "env_time_s": self.env_time_s,
            "last_eval": self.last_eval,
            "last_eval_step": self.last_eval_step,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        episodes = (EpisodeRecord(float(r), int(n), bool(s)) for r, n, s in data["recent"])
        recent = deque(episodes, maxlen=EPISODE_WINDOW)
        return cls(data["steps"], data["episodes"], recent, data["wall_time_s"], data.get("train_time_s", 0.0),
                   data.get("env_time_s", 0.0), data["last_eval"], data["last_eval_step"])

    def train_metrics(self) -> dict[str, float | None]:
        if not self.recent:
            return {"train/return": None, "train/success": None, "train/length": None}
        return {
            "train/return": float(np.mean([e.episode_return for e in self.recent])),
            "train/success": float(np.mean([e.success for e in self.recent])),
            "train/length": float(np.mean([e.length for e in self.recent])),
        }


class Trainer:
    """Trains one pipeline; ``run()`` returns the summary (also written to ``summary.json``).

    A fresh run replaces the results of an earlier run in the same
    ``output_dir``; ``resume=True`` continues it from its last checkpoint
    instead. SIGINT (Ctrl-C) and SIGTERM stop the run after the current
    iteration with a checkpoint saved; a second Ctrl-C stops at once.
    """

    def __init__(
        self,
        config: PipelineConfig,
        registry: Registry | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        check_seed(config.trainer.seed)
        self.config = config
        self.registry = registry or default_registry()
        self.resume = resume
        self.progress = progress
        self.output_dir = Path(config.trainer.output_dir)
        self._stop_signal: int | None = None
        self.network_factory: NetworkFactory | None = None  # set when the run builds its networks
        self._session_start = time.monotonic()
        self._earlier_sessions_s = 0.0
        self.ranks = Ranks()  # this process's share of a data-parallel run (see polyfuse.training.distributed)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train; ``output_dir`` stays locked (see :mod:`polyfuse.training.lock`) until the summary is out."""
        self._lock: RunLock | None = None
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _run(self) -> dict[str, Any]:
        self._session_start = time.monotonic()
        self.ranks = ranks()
        self.progress = self.progress and self.ranks.main
        if self.config.env is not None:
            check_env_id(self.config.env.id)  # before touching output_dir
        if self.ranks.main and not self.resume:
            if self.config.trainer.continue_from is not None:
                check_gateable(self.config)
            check_output_dir(self.config.trainer.continue_from, self.output_dir)  # before clearing it
        checkpoint = self._prepare_output_dir() if self.ranks.main else None
        if self.ranks.parallel:  # the others wait for rank 0's folder, then resume from its checkpoint
            barrier()
            checkpoint = checkpoint if self.ranks.main else self._rank_checkpoint()
        state = RunState.from_dict(checkpoint["trainer"]) if checkpoint else RunState()
        self._earlier_sessions_s = state.wall_time_s
        trainer_config = self.config.trainer
        torch.set_num_threads(trainer_config.num_threads)
        seed_everything(trainer_config.seed)
        # Environments that saved their state are built as in the first session and restored (exact resume);
        # others are seeded anew, so that the resumed run plays new episodes rather than replay old ones.
        reseed = checkpoint is not None and checkpoint.get("envs") is None
        env_seed = derive_seed(trainer_config.seed, 1, state.steps) if reseed else trainer_config.seed
        # Other ranks play their own episodes: never rank 0's saved ones, and on resume new ones.
        own = derive_seed(trainer_config.seed, 1, state.steps) if checkpoint and not self.ranks.main else env_seed
        rank_env_seed = rank_seed(own, self.ranks.rank)
        self._resumed_interval = checkpoint.get("interval") if checkpoint else None
        with self._stop_on_signals(), ExitStack() as cleanup:
            envs, reward, optimizer = self._build(env_seed, rank_env_seed, cleanup)
            self._envs = envs
            evaluators = self._evaluators(cleanup) if self.ranks.main else {}  # rank 0 evaluates
            log = MetricsLog(self.output_dir, resume_step=state.steps if checkpoint else None) if self.ranks.main \
                else None
            if log is not None:
                cleanup.callback(log.close)
            if checkpoint:
                if reseed and envs is not None and self.ranks.main:
                    print(f"note: {self.config.env.id}'s environments cannot save their state without pickle; "
                          "the resumed run plays freshly seeded episodes (every other random stream is "
                          "restored)", file=sys.stderr)
                self._restore(checkpoint, optimizer, reward, envs if self.ranks.main else None)
            else:
                self._continue(optimizer, log)
                self._warm_start(optimizer, log)
                self._evaluate(optimizer, evaluators, state, log)
            self._train(optimizer, envs, reward, evaluators, state, log)
            if self._stop_signal is None and state.last_eval_step != state.steps:
                self._evaluate(optimizer, evaluators, state, log)
            self._save(optimizer, reward, state)
            promotion = self._gate(optimizer, evaluators, state, log) if self._stop_signal is None else None
        if not self.ranks.main:  # rank 0 reports the run
            stop = signal.Signals(self._stop_signal).name if self._stop_signal is not None else None
            return {"rank": self.ranks.rank, "steps": state.steps, "interrupted": stop}
        plot = plot_learning_curve(read_metrics(log.path), self.output_dir / PLOT_FILE, self._title())
        if self._stop_signal is not None:
            return {"interrupted": signal.Signals(self._stop_signal).name, "steps": state.steps,
                    "paths": self._paths(plot)}
        summary = {**self._summary(state, plot), **({"promotion": promotion} if promotion else {})}
        (self.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    def _train(
        self,
        optimizer: RLOptimizer,
        envs: TrackedVectorEnv | None,
        reward: RewardSource,
        evaluators: dict[str | None, Evaluator],
        state: RunState,
        log: MetricsLog | None,
    ) -> None:
        """Iterate the optimizer until the budget is spent or a stop signal arrives."""
        trainer_config = self.config.trainer
        total, unit = trainer_config.total_steps, trainer_config.budget_unit
        log_every = max(total // LOG_POINTS, 1)
        interval = self._interval = _Interval(state.steps)
        interval.load(self._resumed_interval)  # the log interval a checkpoint cut, continued
        self._resumed_interval = None
        stalled = 0
        bar = tqdm(total=total, initial=min(state.steps, total), unit=unit.removesuffix("s").replace("_", " "),
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True, mininterval=0.5)
        agreed: int | None = None  # with several ranks, the stop request as exchanged: a rank signalled between
        # two exchanges (while the others wait for it in a collective) must not stop alone
        try:
            while state.steps < total and (agreed if self.ranks.parallel else self._stop_signal) is None:
                before, progress_before = state.steps, optimizer.progress
                started, env_before = time.perf_counter(), envs.env_time_s if envs else 0.0
                interval.add(optimizer.iterate(), "optimizer/")
                progress = optimizer.progress
                state.steps = progress.of(unit)
                stalled = stalled + 1 if state.steps == before else 0
                self._check_progress(progress_before, progress, stalled)
                if envs is not None:
                    state.env_time_s += envs.env_time_s - env_before
                    shared = exchange(envs.pop_episodes(), self._stop_signal, progress, self.config.optimizer.name)
                    agreed = shared.stop  # a signal to any rank stops them all after this iteration
                    if agreed is not None:
                        self._stop_signal = agreed
                    for episode in shared.episodes:
                        state.episodes += 1
                        state.recent.append(episode)
                    if reward.segment_length is not None:
                        reward.observe(envs.pop_segments())
                for _ in range(_crossings(before, state.steps, trainer_config.reward_update_every)):
                    interval.add(reward.update(), "reward/")  # one update per period, however long the iterate
                bar.update(min(state.steps, total) - min(before, total))
                if _crossed(before, state.steps, log_every) or state.steps >= total:
                    bar.set_postfix(self._postfix(state), refresh=False)
                    if log is not None:
                        log.write(self._train_record(state, interval, progress))
                    interval = self._interval = _Interval(state.steps)
                state.train_time_s += time.perf_counter() - started
                if _crossed(before, state.steps, trainer_config.eval_every):
                    self._evaluate(optimizer, evaluators, state, log)
                if _crossed(before, state.steps, trainer_config.checkpoint_every) and state.steps < total:
                    self._save(optimizer, reward, state)
            # Stopped by a signal between two log points: no line off the step grid; the checkpoint keeps
            # the interval's sums, so a resumed run writes the next grid line as the uninterrupted run would.
        finally:
            bar.close()

    def _check_progress(self, before: Any, after: Any, stalled: int) -> None:
        """Stop a run whose optimizer does nothing, instead of looping forever."""
        unit, name = self.config.trainer.budget_unit, self.config.optimizer.name
        if after == before:
            raise PolyfuseError(
                f"optimizer {name!r} made no progress in one iterate() (env steps, gradient steps and samples "
                f"unchanged at {before.as_dict()}); the run cannot reach its budget. If it learns from a dataset, "
                "check that the dataset is not empty; if it is a plugin's optimizer, its iterate() must advance "
                "`progress`"
            )
        if stalled >= STALLED_ITERATIONS:
            raise PolyfuseError(
                f"optimizer {name!r} has not advanced trainer.budget_unit ({unit}) in {stalled} iterations "
                f"(progress: {after.as_dict()}); choose a budget_unit it counts"
            )

    # -- building --------------------------------------------------------------------------------

    def _build(
        self, seed: int, env_seed: int, cleanup: ExitStack
    ) -> tuple[TrackedVectorEnv | None, RewardSource, RLOptimizer]:
        """Environments (this rank's, seeded with ``env_seed``), dataset, reward, network factory and optimizer
        (seeded with ``seed``, alike on every rank), set up and ready to iterate."""
        config, registry = rank_share(self.config, self.ranks.size), self.registry
        vector_env: Any = None
        sampled = config.env is not None and config.env.vectorization in ("pipelined", "ray")
        if sampled:
            from polyfuse.sampling import make_sampler

            vector_env = cleanup.enter_context(make_sampler(config, env_seed))  # told whether the run ended well
        elif config.env is not None:
            vector_env = make_vector_env(
                config.env.id, config.env.kwargs, num_envs=config.env.num_envs,
                vectorization=config.env.vectorization, seed=env_seed,
            )
            cleanup.callback(vector_env.close)
        observation_space = vector_env.single_observation_space if vector_env is not None else None
        action_space = vector_env.single_action_space if vector_env is not None else None
        dataset = None
        if config.dataset is not None:
            dataset = registry.create(Kind.DATASET, config.dataset.name, config.dataset.params,
                                      observation_space=observation_space, action_space=action_space)
            observation_space = observation_space or dataset.observation_space
            action_space = action_space or dataset.action_space
        self._spaces = (observation_space, action_space)
        self.network_factory = make_network = NetworkFactory(config, observation_space, registry)
        trainer = config.trainer
        reward = registry.create(Kind.REWARD, config.reward.name, config.reward.params, context=RunContext(
            observation_space, action_space, make_network, derive_seed(trainer.seed, 3), self.output_dir,
            planned_updates=trainer.total_steps // trainer.reward_update_every, registry=registry,
            env_id=config.env.id if config.env else None,
            action_names=action_names(config.env.id, config.env.kwargs) if config.env else None,
        ))
        cleanup.callback(reward.close)
        envs: Any = None
        if sampled:  # the runners track their environments; the sampler hands over episodes and segments
            vector_env.segment_length, envs = reward.segment_length, vector_env
        elif vector_env is not None:
            envs = TrackedVectorEnv(vector_env, reward.segment_length)
        optimizer = registry.create(Kind.OPTIMIZER, config.optimizer.name, config.optimizer.params)
        self._check_data(optimizer, envs, dataset)
        if self.ranks.parallel:
            check_rank_components(optimizer, reward, self.ranks.size, config.optimizer.name)
        optimizer.set_budget(Budget(config.trainer.total_steps, config.trainer.budget_unit))
        optimizer.setup(Pipeline(make_network, seed, observation_space, action_space, envs, reward, dataset))
        return envs, reward, optimizer

    def _check_data(self, optimizer: RLOptimizer, envs: TrackedVectorEnv | None, dataset: Any) -> None:
        name, unit = self.config.optimizer.name, self.config.trainer.budget_unit
        if optimizer.learns_from == "env" and envs is None:
            raise PolyfuseError(f"env: optimizer {name!r} learns by stepping an environment; add env: {{id: ...}}")
        if optimizer.learns_from == "dataset":
            if dataset is None:
                raise PolyfuseError(
                    f"dataset: optimizer {name!r} learns from a dataset; add dataset: {{name: preferences, "
                    "params: {path: ...}}"
                )
            if unit == "env_steps":
                raise PolyfuseError(
                    f"trainer.budget_unit: optimizer {name!r} learns from a dataset and takes no environment "
                    "steps; set budget_unit: gradient_steps (or samples)"
                )

    def _warm_start(self, optimizer: RLOptimizer, log: MetricsLog | None) -> None:
        warm = self.config.trainer.warm_start
        if warm is None:
            return
        if self.config.env is None:
            raise PolyfuseError("trainer.warm_start: behaviour cloning follows the environment's expert; "
                                "add env: {id: ...} or remove trainer.warm_start")
        seed = derive_seed(self.config.trainer.seed, 2)
        demonstrations = collect_demonstrations(self.config.env, warm.episodes, seed)
        metrics = behaviour_cloning(optimizer, demonstrations, warm, seed)  # alike on every rank: same data, seed
        if log is None:
            return
        log.write({"kind": "warm_start", "step": 0, **metrics})
        print(f"warm start: {metrics['warm_start/samples']} expert labels, accuracy "
              f"{metrics['warm_start/accuracy']:.3f}", file=sys.stderr)

    def _continue(self, optimizer: RLOptimizer, log: MetricsLog | None) -> None:
        """Start from the policy trainer.continue_from serves (see :mod:`polyfuse.training.continuation`)."""
        run_dir = self.config.trainer.continue_from
        if run_dir is None:
            return
        if self.config.optimizer.params.get("init_from") is not None:
            raise PolyfuseError("optimizer.params.init_from and trainer.continue_from both choose the starting "
                                "policy; keep one")
        check_fits(self.config, self._spaces, run_dir, self.registry)
        trained_by = load_policy_from(optimizer, run_dir)
        if log is not None:
            location = str(served_checkpoint(run_dir))
            log.write({"kind": "continue_from", "step": 0, "run": str(run_dir), "checkpoint": location,
                       "optimizer": trained_by})
            print(f"continuing from {location} (the policy {run_dir} serves, trained by {trained_by})",
                  file=sys.stderr)

    def _gate(
        self, optimizer: RLOptimizer, evaluators: dict[str | None, Evaluator], state: RunState,
        log: MetricsLog | None,
    ) -> dict[str, Any] | None:
        """With trainer.continue_from: the promotion decision (:mod:`polyfuse.training.gate`), logged."""
        if self.config.trainer.continue_from is None or not evaluators or log is None:
            return None
        from polyfuse.training.gate import run_gate

        total = 2 * self.config.trainer.eval_episodes * len(self.config.trainer.eval_modes) * len(evaluators)
        try:  # the served run may have changed or gone since this run started from it
            check_fits(self.config, self._spaces, self.config.trainer.continue_from, self.registry)
            with tqdm(total=total, desc="promotion gate", unit="episode", leave=False, file=sys.stderr,
                      disable=not self.progress, dynamic_ncols=True, mininterval=0.5) as bar:
                decision = run_gate(self.config, self.registry, optimizer, self.output_dir / CHECKPOINT_DIR,
                                    state.steps, evaluators, bar.update, lambda: self._stop_signal is not None)
        except PolyfuseError as exc:
            raise PolyfuseError(f"promotion gate: {exc}\nthe candidate is saved in {self.output_dir / CHECKPOINT_DIR}"
                                "; once that is fixed, run again with --resume to judge it") from None
        if decision is not None:  # None: stopped by a signal before deciding (--resume judges again)
            log.write({"kind": "promotion", "step": state.steps, **decision})
        return decision

    # -- evaluation, checkpoints, records ---------------------------------------------------------

    def _evaluators(self, cleanup: ExitStack) -> dict[str | None, Evaluator]:
        """The run's env alone (name None), or each suite environment by name; none without either.

        Suite environments are checked against the policy's observations and actions now, not after training.
        """
        trainer = self.config.trainer
        if trainer.eval_suite is None:
            targets = {None: self.config.env} if self.config.env is not None else {}
        else:
            targets = {env.label: EnvConfig(id=env.id, kwargs=env.kwargs) for env in trainer.eval_suite}
        evaluators: dict[str | None, Evaluator] = {}
        for name, env in targets.items():
            try:
                evaluators[name] = evaluator = Evaluator(env, trainer.eval_episodes)
            except PolyfuseError as exc:
                raise PolyfuseError(f"trainer.eval_suite ({name}): {exc}" if name else str(exc)) from None
            cleanup.callback(evaluator.close)
            if name is not None:
                check_compatible(self.config.modalities, *self._spaces, evaluator.observation_space,
                                 evaluator.action_space, f"trainer.eval_suite environment {name!r} ({env.id})")
        return evaluators

    def _evaluate(
        self, optimizer: RLOptimizer, evaluators: dict[str | None, Evaluator], state: RunState,
        log: MetricsLog | None,
    ) -> None:
        if not evaluators or log is None:  # no environment (or not rank 0): nothing held out to evaluate on
            return
        modes = self.config.trainer.eval_modes
        total = self.config.trainer.eval_episodes * len(modes) * len(evaluators)
        with tqdm(total=total, desc=f"eval at {state.steps}", unit="episode", leave=False, file=sys.stderr,
                  disable=not self.progress, dynamic_ncols=True, mininterval=0.5) as bar:
            results = {name: e.evaluate(optimizer, modes, bar.update) for name, e in evaluators.items()}
        metrics = eval_metrics(results, modes)
        state.last_eval, state.last_eval_step = metrics, state.steps
        log.write({"kind": "eval", "step": state.steps, "time_s": round(self._wall_time(), 3), **metrics})

    def _wall_time(self) -> float:
        """Seconds this run has taken so far, over all its sessions (resumes)."""
        return self._earlier_sessions_s + time.monotonic() - self._session_start

    def _save(self, optimizer: RLOptimizer, reward: RewardSource, state: RunState) -> None:
        if not self.ranks.main:
            return
        state.wall_time_s = self._wall_time()
        trainer_state = state.to_dict()
        save_checkpoint(self.output_dir, {
            "config": self.config.model_dump(mode="json"),
            "trainer": trainer_state,
            "rng": rng_state(),
            "optimizer": optimizer.state_dict(),
            "reward": reward.state_dict(),
            "envs": self._envs.get_state() if getattr(self, "_envs", None) is not None else None,
            "interval": self._interval.state_dict() if getattr(self, "_interval", None) is not None else None,
            "cache": self._cache_counters(),
        }, frozen=self._frozen_encoders())

    def _frozen_encoders(self) -> list[torch.nn.Module]:
        """The run's frozen encoders (stored once beside the checkpoints instead of in each)."""
        unique: dict[int, torch.nn.Module] = {}
        for network in self.network_factory.networks if self.network_factory else []:
            for encoder in getattr(network, "encoders", {}).values():
                if not encoder.trainable and any(True for _ in encoder.state_dict()):
                    unique.setdefault(id(encoder), encoder)
        return list(unique.values())

    def _cache_counters(self) -> list[dict[str, dict[str, int]]]:
        """Each built network's feature-cache counters by modality (saved, so cache/ metrics continue)."""
        return [{modality: cached.stats.as_dict() for modality, cached in network.cached_encoders.items()}
                for network in (self.network_factory.networks if self.network_factory else [])
                if hasattr(network, "cached_encoders")]

    def _restore(
        self, checkpoint: dict[str, Any], optimizer: RLOptimizer, reward: RewardSource,
        envs: TrackedVectorEnv | None = None,
    ) -> None:
        """Load a checkpoint's states; one that does not fit this run is an error naming it, not a traceback.

        Saved environments are restored first, so that the optimizer acts on their observations next.
        """
        part = "envs"
        try:
            if envs is not None and checkpoint.get("envs") is not None:
                envs.set_state(checkpoint["envs"])
            part = "optimizer"
            optimizer.load_state_dict(checkpoint["optimizer"])
            part = "reward"
            reward.load_state_dict(checkpoint["reward"])
            part = "rng"
            set_rng_state(checkpoint["rng"])
            part = "cache"
            networks = [n for n in (self.network_factory.networks if self.network_factory else [])
                        if hasattr(n, "cached_encoders")]
            for network, counters in zip(networks, checkpoint.get("cache") or []):
                for modality, counts in counters.items():
                    if modality in network.cached_encoders:
                        network.cached_encoders[modality].stats.load(counts)
        except PolyfuseError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            location = getattr(self, "_checkpoint_location", self.output_dir / CHECKPOINT_DIR)
            raise PolyfuseError(
                f"cannot restore the {part} state from {location}: {type(exc).__name__}: {str(exc)[:300]}; "
                "the checkpoint does not fit this run's pipeline (damaged, or written by another version); "
                "start a new run without --resume"
            ) from None

    def _train_record(self, state: RunState, interval: _Interval, progress: Any) -> dict[str, Any]:
        return {
            "kind": "train",
            "step": state.steps,
            "time_s": round(self._wall_time(), 3),
            "steps_per_second": round(interval.steps_per_second(state.steps), 1),
            **progress.as_dict(),
            "episodes": state.episodes,
            **state.train_metrics(),
            **{k: json_number(v) for k, v in interval.means().items()},
            **{f"cache/{k}": v for k, v in self._cache_stats().items()},
        }

    def _cache_stats(self) -> dict[str, float]:
        """Feature-cache counters summed over the networks built (for those that have a cache)."""
        totals: dict[str, float] = {}
        for network in self.network_factory.networks if self.network_factory else []:
            stats = network.cache_stats() if hasattr(network, "cache_stats") else {}
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return totals

    def _postfix(self, state: RunState) -> dict[str, str]:
        train = state.train_metrics()
        postfix = {}
        if train["train/return"] is not None:
            postfix = {"return": f"{train['train/return']:.3g}", "success": f"{train['train/success']:.2f}"}
        for mode in self.config.trainer.eval_modes if state.last_eval is not None else ():
            if f"eval/{mode}/success" in state.last_eval:
                figures = [state.last_eval[f"eval/{mode}/success{end}"] for end in ("", "_low", "_high")]
                postfix[f"eval {mode}"] = "{:.2f} [{:.2f}, {:.2f}]".format(*figures)
        return postfix

    def _summary(self, state: RunState, plot: Path) -> dict[str, Any]:
        wall_time = self._wall_time()
        return {
            "steps": state.steps,
            "episodes": state.episodes,
            "wall_time_s": round(wall_time, 2),
            "steps_per_second": round(state.steps / wall_time, 1),
            "train_time_s": round(state.train_time_s, 2),
            "train_steps_per_second": round(state.steps / max(state.train_time_s, 1e-9), 1),
            "env_time_s": round(state.env_time_s, 2),
            "eval": self._eval_summary(state),
            "train": {key.removeprefix("train/"): value for key, value in state.train_metrics().items()},
            "env": self.config.env.id if self.config.env else None,
            "dataset": self.config.dataset.name if self.config.dataset else None,
            "budget_unit": self.config.trainer.budget_unit,
            "optimizer": self.config.optimizer.name,
            "seed": self.config.trainer.seed,
            "paths": self._paths(plot),
        }

    def _eval_summary(self, state: RunState) -> dict[str, Any]:
        """The last evaluation, nested (``eval/greedy/success`` → ``["greedy"]["success"]``), with its primary mode."""
        if not state.last_eval:
            return {}
        return {**nest(state.last_eval), "primary": self.config.trainer.eval_modes[0]}

    def _paths(self, plot: Path) -> dict[str, str]:
        return {
            "output_dir": str(self.output_dir),
            "metrics": str(self.output_dir / METRICS_FILE),
            "plot": str(plot),
            "checkpoint": str(self.output_dir / CHECKPOINT_DIR),
            "summary": str(self.output_dir / SUMMARY_FILE),
        }

    def _title(self) -> str:
        modalities = ", ".join(f"{m}: {c.encoder.name}" for m, c in self.config.modalities.items())
        config = self.config
        data = config.env.id if config.env else f"dataset {config.dataset.name if config.dataset else ''}"
        return f"{data} | {modalities} | {config.fuser.name} | {config.optimizer.name}"

    # -- output folder and signals ------------------------------------------------------------------

    def _prepare_output_dir(self) -> dict[str, Any] | None:
        """Lock the folder (one run at a time), then load the checkpoint to resume or clear old results."""
        if self.resume and not self.output_dir.is_dir():  # no folder to lock: do not create one just to fail
            raise PolyfuseError(
                f"nothing to resume: {self.output_dir} has no checkpoint; run without --resume to start"
            )
        self._lock = RunLock.acquire(self.output_dir)
        if self.resume:
            found = load_latest_checkpoint(self.output_dir, required=("config", "trainer", "rng", "optimizer",
                                                                       "reward"))
            if found is None:
                raise PolyfuseError(
                    f"nothing to resume: {self.output_dir} has no checkpoint; run without --resume to start"
                )
            location, checkpoint = found
            self._checkpoint_location = location
            check_resumable(checkpoint["config"], self.config.model_dump(mode="json"), location, self.registry)
            return checkpoint
        existing = [self.output_dir / name for name in RUN_FILES if (self.output_dir / name).exists()]
        if existing:
            print(f"starting afresh in {self.output_dir} (the earlier run there is replaced; "
                  "--resume continues it instead)", file=sys.stderr)
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return None

    def _rank_checkpoint(self) -> dict[str, Any] | None:
        """On a rank other than 0: rank 0's checkpoint when resuming (rank 0 has checked it fits the config)."""
        if not self.resume:
            return None
        found = load_latest_checkpoint(self.output_dir)
        assert found is not None, "rank 0 found a checkpoint before the barrier"
        return found[1]

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM into a request to stop after the current iteration (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, _frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
            self._stop_signal = signum
            if self.ranks.main:
                print(f"\n{signal.Signals(signum).name}: stopping after this iteration and saving a checkpoint "
                      "(Ctrl-C again to stop now)", file=sys.stderr)

        previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def check_resumable(saved: dict[str, Any], current: dict[str, Any], location: Path,
                    registry: Registry | None = None) -> None:
    """Refuse to resume a run with a different config (only :data:`RESUMABLE_CHANGES` may change)."""
    # both sides through the same validation: one pass does not always reach a fixed point (a default
    # preference-model feedback source gets its params filled on the second), so comparing a re-validated
    # saved config with a once-validated current one would refuse runs whose config did not change
    upgraded, today = _with_todays_defaults(saved, registry), _with_todays_defaults(current, registry)
    changed = [path for path in config_differences(upgraded, today) if path not in RESUMABLE_CHANGES]
    if changed:
        raise PolyfuseError(
            f"cannot resume from {location}: the config changed since the checkpoint ({', '.join(changed)}); "
            "resume with the original config, or start a new run in another output_dir"
        )


def _with_todays_defaults(saved: dict[str, Any], registry: Registry | None) -> dict[str, Any]:
    """A config as this version of polyfuse and its plugins validate it.

    A field added since the checkpoint was written (a new option with a default) is absent from the
    saved config; taking its default is not a change, so upgrading does not strand a run. A config
    that no longer validates is compared as saved: what changed shows in the refusal.
    """
    try:
        return validate_pipeline(saved, registry).model_dump(mode="json")
    except ConfigError:
        return saved


def _crossings(before: int, after: int, every: int) -> int:
    """How many multiples of ``every`` lie in ``(before, after]`` (schedules that survive resume)."""
    return after // every - before // every


def _crossed(before: int, after: int, every: int) -> bool:
    return _crossings(before, after, every) > 0


class _Interval:
    """Optimizer metrics and throughput since the last train line."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.start_time = time.monotonic()
        self.iterations = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float], prefix: str) -> None:
        """Record one iteration's metrics (``prefix`` is ``optimizer/`` or ``reward/``)."""
        if prefix == "optimizer/":  # reward updates ride along with iterations, they are not ones
            self.iterations += 1
        for key, value in ((prefix + k, v) for k, v in metrics.items()):
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of an interval cut short: its iterations and metric sums (not its clock)."""
        return {"iterations": self.iterations, "sums": dict(self._sums), "counts": dict(self._counts)}

    def load(self, state: dict[str, Any] | None) -> None:
        if state:
            self.iterations = int(state["iterations"])
            self._sums = {k: float(v) for k, v in state["sums"].items()}
            self._counts = {k: int(v) for k, v in state["counts"].items()}

    def means(self) -> dict[str, float]:
        return {key: total / self._counts[key] for key, total in self._sums.items()}

    def steps_per_second(self, step: int) -> float:
        return (step - self.start_step) / max(time.monotonic() - self.start_time, 1e-9)
