"""``polyfuse run``: train a pipeline config (or the embedded default) and report held-out results.

With ``--json`` the last line of stdout is one JSON object (the run's
summary), so scripts can read results without parsing prose.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from polyfuse.components import Kind
from polyfuse.config import PipelineConfig, read_yaml, validate_pipeline
from polyfuse.declarations import declared_learns_from
from polyfuse.errors import PolyfuseError
from polyfuse.overrides import apply_overrides, describe
from polyfuse.preflight import check_pipeline
from polyfuse.registry import Registry

DEFAULT_PIPELINE = "digits_vqa.yaml"
INTERRUPTED_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def default_pipeline_data() -> dict[str, Any]:
    """The embedded default pipeline (``polyfuse/defaults/digits_vqa.yaml``) as parsed YAML."""
    import yaml

    text = resources.files("polyfuse").joinpath("defaults", DEFAULT_PIPELINE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def resolve_config(args: argparse.Namespace, registry: Registry) -> PipelineConfig:
    """The config to run: the file given, else (on --resume) the checkpoint's, else the default; + overrides."""
    if args.config:
        data, source = read_yaml(Path(args.config)), args.config
    else:
        data, source = default_pipeline_data(), f"embedded default ({DEFAULT_PIPELINE})"
        if args.resume:
            data, source = _checkpoint_config(data, args.output_dir) or (data, source)
    data, source = apply_overrides(data, args.overrides), describe(source, args.overrides)
    if isinstance(data, dict):
        trainer = data.setdefault("trainer", {})
        if isinstance(trainer, dict):
            overrides = {"output_dir": args.output_dir, "total_steps": args.steps, "seed": args.seed,
                         "continue_from": args.continue_from}
            trainer.update({key: value for key, value in overrides.items() if value is not None})
            if args.no_promote and isinstance(trainer.setdefault("promotion", {}), dict):
                trainer["promotion"]["promote"] = False
    config = validate_pipeline(data, registry, source=source)
    if args.no_promote and config.trainer.continue_from is None:
        raise PolyfuseError("--no-promote steers the promotion gate of a continued run: add --continue-from RUN "
                            "(or trainer.continue_from), or leave --no-promote out")
    check_pipeline(config, registry, source=source)
    return config


def _checkpoint_config(default: dict[str, Any], output_dir: str | None) -> tuple[dict[str, Any], str] | None:
    """On ``--resume`` without a config file: the config the checkpoint was trained with."""
    from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree

    folder = Path(output_dir or default.get("trainer", {}).get("output_dir", "runs/latest"))
    location = checkpoint_location(folder)
    if location is None:
        return None
    return read_checkpoint_tree(location)["config"], f"config saved in {location}"


def run_command(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.plugins import broken_plugins_notice
    from polyfuse.training.distributed import check_distributable, launched_by_torchrun
    from polyfuse.training.trainer import Trainer

    notice = broken_plugins_notice(registry.plugins)
    if notice and os.environ.get("RANK", "0") == "0":  # once per run (rank 0's), before anything else
        print(notice, file=sys.stderr)
    config = resolve_config(args, registry)
    if launched_by_torchrun():  # started by torchrun itself: each rank checks what --nproc checks before launching
        check_distributable(config, int(os.environ["WORLD_SIZE"]), _learns_from(config, registry))
        return _run_rank(args, config, registry)
    if args.nproc is not None and args.nproc > 1:
        from polyfuse.training.launch import launch

        check_distributable(config, args.nproc, _learns_from(config, registry))
        return launch(args, args.nproc)
    return report(args, config, Trainer(config, registry, resume=args.resume).run())


def _learns_from(config: PipelineConfig, registry: Registry) -> str | None:
    """Where the config's optimizer learns from (``"env"``, ``"dataset"``, None), as its plugin declares."""
    return declared_learns_from(registry.get(Kind.OPTIMIZER, config.optimizer.name).factory)


def _run_rank(args: argparse.Namespace, config: PipelineConfig, registry: Registry) -> int:
    """One rank of a data-parallel run (torchrun's): rank 0 reports as a single process does, the others keep quiet."""
    from polyfuse.training.distributed import barrier, initialize, lost_peer, shutdown
    from polyfuse.training.launch import check_single_launch
    from polyfuse.training.trainer import Trainer

    group = initialize()
    if not group.main:  # rank 0 shows the run's progress; others would draw over it (tqdm's way to turn bars off)
        import tqdm

        tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)  # type: ignore[method-assign]
    try:
        check_single_launch(args.nproc, group)
        summary = Trainer(config, registry, resume=args.resume).run()
        barrier()  # rank 0 evaluates and saves last: the others wait, so that no rank leaves a live group
    except RuntimeError as exc:
        if not lost_peer(exc):
            raise
        raise PolyfuseError(f"rank {group.rank} of {group.size}: another rank stopped, so this one stops too "
                            f"(the other rank's own message says why; {str(exc).splitlines()[0][:200]})") from None
    finally:
        shutdown()
    if group.main:
        return report(args, config, summary, group.size)
    return INTERRUPTED_EXIT_CODES.get(summary["interrupted"], 1) if summary["interrupted"] else 0


def report(args: argparse.Namespace, config: PipelineConfig, summary: dict[str, Any], nproc: int = 1) -> int:
    """Print a run's summary (or how to continue an interrupted one); the exit code."""
    if "interrupted" in summary:
        settings = "".join(f" --set {shlex.quote(assignment)}" for assignment in args.overrides)
        again = f"polyfuse run {args.config or ''}{settings} --resume --output-dir {config.trainer.output_dir}"
        again += f" --nproc {nproc}" if nproc > 1 else ""
        print(f"stopped by {summary['interrupted']} at step {summary['steps']}: checkpoint saved in "
              f"{summary['paths']['checkpoint']}; continue with `{' '.join(again.split())}`", file=sys.stderr)
        code = INTERRUPTED_EXIT_CODES.get(summary["interrupted"], 1)
    else:
        print(format_summary(summary))
        code = 0
    if args.json:
        print(json.dumps(summary))
    return code


def format_summary(summary: dict[str, Any]) -> str:
    held_out, paths = summary["eval"], summary["paths"]
    unit = summary["budget_unit"].replace("_", " ")
    return "\n".join([
        *format_eval(held_out),
        f"{summary['steps']} {unit} in {summary['wall_time_s']:.1f} s ({summary['steps_per_second']:.0f}/s)",
        f"metrics:    {paths['metrics']}",
        f"plot:       {paths['plot']}",
        f"checkpoint: {paths['checkpoint']}",
        *(format_promotion(summary["promotion"]) if "promotion" in summary else []),
    ])


def format_eval(held_out: dict[str, Any]) -> list[str]:
    """Lines of held-out figures: each mode's success and mean return with 95% intervals, primary first."""
    if not held_out:
        return ["no env configured: no held-out evaluation"]
    modes = [mode for mode in ("greedy", "sampled") if isinstance(held_out.get(mode), dict)]
    if not modes:  # a summary from before evaluation modes
        return [(f"held-out ({held_out['episodes']} episodes): success {held_out['success']:.3f}, "
                 f"mean return {held_out['return']:.3f}")]
    primary = held_out.get("primary", modes[0])
    where = f"{held_out['envs']} environments, " if "envs" in held_out else ""
    lines = [f"held-out ({where}{held_out['episodes']} episodes each; 95% intervals; {primary} is primary):"]
    width = max(len(mode) for mode in modes)
    for mode in sorted(modes, key=lambda m: m != primary):
        lines.append(f"  {mode + ':':<{width + 1}} {_figures(held_out[mode])}")
    for name, by_mode in (held_out.get("suite") or {}).items():
        lines.append(f"    {name}: " + "; ".join(f"{mode} {_figures(by_mode[mode], short=True)}" for mode in modes
                                                   if mode in by_mode))
    return lines


def format_promotion(decision: dict[str, Any]) -> list[str]:
    """The promotion gate's lines: both policies' figures on the same held-out episodes, and the decision."""
    if decision["promoted"]:
        verdict = f"promoted: {decision['served_run']} now serves {decision['candidate']['checkpoint']}"
    elif decision["passed"]:
        verdict = f"not promoted (--no-promote / promotion.promote: false), though it passed: {decision['rule']}"
    else:
        verdict = (f"not promoted: {decision['rule']} does not hold; {decision['served_run']} keeps serving "
                   f"{decision['incumbent']['checkpoint']}")
    lines = ["promotion gate (candidate and incumbent on the same held-out episodes):"]
    for role in ("candidate", "incumbent"):
        figures = {key: value for key, value in decision[role].items() if key not in ("checkpoint", "step")}
        lines += [f"{role} (step {decision[role]['step']}):", *format_eval(figures)[1:]]
    return [*lines, verdict]


def _figures(figures: dict[str, float], short: bool = False) -> str:
    success = "{:.3f} [{:.3f}, {:.3f}]".format(*(figures[f"success{end}"] for end in ("", "_low", "_high")))
    if short:
        return f"success {success}"
    mean_return = "{:.3f} [{:.3f}, {:.3f}]".format(*(figures[f"return{end}"] for end in ("", "_low", "_high")))
    text = f"success {success}, mean return {mean_return}"
    if "success_iqm" in figures:
        text += f"; IQM over environments: success {figures['success_iqm']:.3f}, return {figures['return_iqm']:.3f}"
    return text
