"""``polyfuse run --nproc N``: start N ranks of the same run with torch's own launcher (what ``torchrun`` runs).

Users need not know torchrun: this is ``torchrun --standalone --nproc_per_node N -m polyfuse run ...`` with the
same arguments, minus ``--nproc``. Each rank prints its own ``error: ...``; the launcher's traceback is left out.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import uuid

from polyfuse.training.distributed import Ranks

LAUNCHER_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def rank_arguments(args: argparse.Namespace) -> list[str]:
    """The ``polyfuse`` command line each rank runs: the parent's, without ``--nproc``."""
    argv = [part for switch in args.plugin_switches for part in ("-p", switch)]
    argv.append("run")
    if args.config:
        argv.append(args.config)
    argv += [part for assignment in args.overrides for part in ("--set", assignment)]
    for flag, value in (("--output-dir", args.output_dir), ("--steps", args.steps), ("--seed", args.seed),
                        ("--continue-from", args.continue_from)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--resume", args.resume), ("--json", args.json),
                                   ("--no-promote", args.no_promote)) if on]
    return argv


def launch(args: argparse.Namespace, nproc: int) -> int:
    """Run ``nproc`` ranks on this machine; their exit code (the first failed rank's, else 0)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_launcher()
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"polyfuse-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "polyfuse", *rank_arguments(args))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 + signal.Signals(-code).value if code < 0 else code
    except SignalException as exc:  # Ctrl-C or SIGTERM: the launcher passed it on, the ranks saved and said so
        return 128 + exc.sigval.value
    return 0


def _quiet_launcher() -> None:
    """The ranks say what went wrong and what they do about a signal; the launcher's log would repeat it."""
    loggers = [name for name in logging.root.manager.loggerDict if name.startswith(LAUNCHER_LOGGERS)]
    for name in [*LAUNCHER_LOGGERS, *loggers]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def check_single_launch(nproc: int | None, group: Ranks) -> None:
    """``--nproc`` inside a rank torchrun already started would start ranks of ranks: refuse it."""
    from polyfuse.errors import PolyfuseError

    if nproc is not None and nproc != group.size:
        raise PolyfuseError(
            f"--nproc {nproc}: this process is already rank {group.rank} of {group.size} started by torchrun; "
            "give the number of processes once, to torchrun (--nproc_per_node) or to polyfuse run (--nproc)"
        )
