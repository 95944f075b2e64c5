"""The Optuna study behind ``polyfuse tune``: storage, samplers and pruners, trials in parallel, resume.

The study lives in an Optuna RDB storage (SQLite in the output folder by default), so several
tuners, on one machine or many, can work on one study: each asks for a trial, runs it and tells the
result, and all stop once the study holds ``--trials`` trials. A trial counts when it completed,
was pruned, failed on its own (an invalid sampled config, a crashed run), or is running.

A tuner that dies leaves its trials RUNNING. When a tuner starts it marks failed those a dead
process on this machine left, and Optuna's heartbeat marks failed those whose tuner (anywhere)
has been silent for ``GRACE_SECONDS``; either way their parameters are queued again, so the
re-run counts toward ``--trials`` and the interrupted attempt does not.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyfuse.errors import ConfigError, PolyfuseError
from polyfuse.registry import Registry
from polyfuse.tuning.runner import Outcome, run_trial
from polyfuse.tuning.space import Space

HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 90
"""A RUNNING trial whose tuner sent no heartbeat for this long is taken for dead (on any machine)."""
WORKER = f"{socket.gethostname()}:{os.getpid()}"
TRIALS_DIR = "trials"
STUDY_ATTRIBUTE = "polyfuse"


def import_optuna() -> Any:
    """Optuna, quiet (the tuner prints its own progress), or the command that installs it."""
    try:
        import optuna
    except ImportError:
        raise PolyfuseError("polyfuse tune needs Optuna, an optional extra: pip install 'polyfuse[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the tuner sends each trial's heartbeat itself (Tuner._run), which Optuna does not expect outside optimize()
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", message="Some regimes for parameter")  # importances of conditional params
    return optuna


def make_sampler(optuna: Any, name: str, seed: int | None) -> Any:
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401 - Optuna imports it only when the first trial samples
        except ImportError:
            raise PolyfuseError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "qmc": optuna.samplers.QMCSampler, "gp": optuna.samplers.GPSampler,
                "cmaes": optuna.samplers.CmaEsSampler}
    return samplers[name](seed=seed)


def make_pruner(optuna: Any, name: str) -> Any:
    """Pruners judge a trial by its held-out evaluations; the first few trials always run to the end."""
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    return pruners[name]()


@dataclass
class StudySettings:
    storage: str
    name: str
    metric: str
    direction: str
    sampler: str
    pruner: str
    seed: int | None


def open_study(optuna: Any, settings: StudySettings, fingerprint: dict[str, Any]) -> Any:
    """Create the study, or load it when it exists; one started on another config or space is refused."""
    try:
        storage = optuna.storages.RDBStorage(
            settings.storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=_requeue_stale)
    except ImportError as exc:
        raise PolyfuseError(f"--storage {settings.storage}: its database driver is not installed ({exc}); "
                            "install it, e.g. pip install psycopg2-binary for postgresql://") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's URL and connection errors have no common base here
        raise PolyfuseError(f"--storage {settings.storage}: cannot open it as an Optuna storage ({exc}); give a "
                            "reachable database URL, e.g. sqlite:///runs/tune/study.db or postgresql://user@host/db"
                            ) from None
    study = optuna.create_study(
        storage=storage, study_name=settings.name, direction=settings.direction, load_if_exists=True,
        sampler=make_sampler(optuna, settings.sampler, settings.seed), pruner=make_pruner(optuna, settings.pruner))
    stored = study.user_attrs.get(STUDY_ATTRIBUTE)
    if stored is None:
        study.set_user_attr(STUDY_ATTRIBUTE, fingerprint)
    elif stored != fingerprint:
        changed = sorted(key for key in fingerprint if stored.get(key) != fingerprint[key])
        raise PolyfuseError(
            f"study {settings.name!r} in {settings.storage} was started with another {', '.join(changed)}; "
            "resume it with the same command, or start a new study with --study-name NAME (or --output DIR)")
    return study


def _requeue(study: Any, trial: Any, why: str) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("retry_of") == trial.number for t in trials):
        return  # another tuner queued it already
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number,
                                                 **({"baseline": True} if trial.user_attrs.get("baseline") else {})})
    state = "failed" if trial.state is TrialState.FAIL else trial.state.name.lower()
    _note(f"trial {trial.number} {why}: marked {state}, its parameters queued again")


def _requeue_stale(study: Any, trial: Any) -> None:
    _requeue(study, trial, f"sent no heartbeat for {GRACE_SECONDS} s (its tuner, "
                           f"{trial.user_attrs.get('worker', 'unknown')}, is gone)")


def recover_interrupted(optuna: Any, study: Any) -> None:
    """Fail and re-queue the trials a killed tuner left RUNNING: at once on this machine, by heartbeat elsewhere."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            _requeue(study, study.get_trials(deepcopy=False)[trial.number],
                     f"was left running by a tuner that stopped (pid {pid} on {host})")
    optuna.storages.fail_stale_trials(study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(study: Any) -> int:
    """Trials toward ``--trials``: every trial but the waiting ones and the interrupted attempts re-queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state is TrialState.FAIL and t.number not in retried))


def enqueue_baseline(study: Any, space: Space) -> None:
    """A new study's first trial runs the config's own values: the defaults the search must match or beat."""
    if study.get_trials(deepcopy=False):
        return
    values, outside = space.own_values()
    if outside:
        _note("trial 0 is not the config's own settings (they lie outside the space: " + "; ".join(outside) +
              "); widen the space to compare the search with them")
        return
    study.enqueue_trial(values, user_attrs={"baseline": True})


def _note(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


class Tuner:
    """Runs trials ``jobs`` at a time until the study holds ``trials``; ``after_trial`` writes the reports."""

    def __init__(self, study: Any, space: Space, registry: Registry, output: Path, metric: str, trials: int,
                 jobs: int, after_trial: Callable[[], None]) -> None:
        self.study, self.space, self.registry, self.output = study, space, registry, output
        self.metric, self.trials, self.jobs, self.after_trial = metric, trials, jobs, after_trial
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._bar: Any = None

    def run(self) -> bool:
        """Run to ``trials``; False when a signal stopped it first (the unfinished trials are re-queued)."""
        from tqdm import tqdm

        done = counted(self.study) - len(self._running())
        previous = {signum: signal.signal(signum, self._request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            with tqdm(total=self.trials, initial=min(done, self.trials), unit="trial", desc="tune",
                      file=sys.stderr, dynamic_ncols=True) as self._bar, ThreadPoolExecutor(self.jobs) as pool:
                self._show_best()
                for future in [pool.submit(self._work) for _ in range(self.jobs)]:
                    future.result()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return not self.stop.is_set()

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()
        _note(f"{signal.Signals(signum).name}: stopping the running trials (they are queued again); "
              "re-run the same command to continue")

    def _running(self) -> list[Any]:
        from optuna.trial import TrialState

        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def _work(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                if counted(self.study) >= self.trials:
                    return
                trial = self.study.ask()
                trial.set_user_attr("worker", WORKER)
            try:
                outcome = self._run(trial)
            except (OSError, PolyfuseError) as exc:  # this trial's folder or config: the next may fare better
                outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}")
            self._tell(trial, outcome)

    def _run(self, trial: Any) -> Outcome:
        from polyfuse.config import validate_pipeline
        from polyfuse.preflight import check_pipeline

        storage, trial_id, last_beat = self.study._storage, trial._trial_id, [-HEARTBEAT_SECONDS]

        def heartbeat() -> None:  # from the first moment: a trial without one is never found stale
            if time.monotonic() - last_beat[0] >= HEARTBEAT_SECONDS / 2:
                storage.record_heartbeat(trial_id)
                last_beat[0] = time.monotonic()

        heartbeat()
        run_dir = self.output / TRIALS_DIR / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        data = self.space.config(self.space.suggest(trial))
        data.setdefault("trainer", {})["output_dir"] = str(run_dir)
        try:
            check_pipeline(validate_pipeline(data, self.registry), self.registry)
        except ConfigError as exc:  # this sample is invalid; others may not be
            return Outcome("failed", error="invalid config: " + "; ".join(f"{p}: {m}" for p, m in exc.problems))

        def report(value: float, step: int) -> bool:
            trial.report(value, step)
            return bool(trial.should_prune())

        return run_trial(data, run_dir, self.metric, report, heartbeat, self.stop.is_set)

    def _tell(self, trial: Any, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        if outcome.error:
            trial.set_user_attr("error", outcome.error[:2000])
        if outcome.state == "complete":
            self.study.tell(trial, outcome.value)
        elif outcome.state == "pruned":
            trial.set_user_attr("pruned_at", outcome.step)
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        with self._lock:
            if outcome.state == "failed" and self.stop.is_set():
                _requeue(self.study, self.study.get_trials(deepcopy=False)[trial.number], "was stopped")
            else:
                _note(f"trial {trial.number}: {self._describe(outcome)}")
                self._bar.update()
            self._show_best()
            self.after_trial()

    def _describe(self, outcome: Outcome) -> str:
        if outcome.state == "complete":
            return f"{self.metric} {outcome.value:.4g}"
        if outcome.state == "pruned":
            return f"pruned at step {outcome.step} ({self.metric} {outcome.value:.4g})"
        return f"failed: {outcome.error}"

    def _show_best(self) -> None:
        best = best_trial(self.study)
        if best is not None:
            self._bar.set_postfix_str(f"best {best.value:.4g} (trial {best.number})", refresh=True)


def best_trial(study: Any) -> Any:
    """The best complete trial, or None before one completes."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial
