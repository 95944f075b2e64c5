"""The ``polyfuse`` command line.

Only light modules are imported here; commands that train import the trainer
when they run, so ``polyfuse --help`` and ``polyfuse plugins`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from polyfuse import __version__
from polyfuse.components import Kind
from polyfuse.errors import PolyfuseError
from polyfuse.overrides import add_override_argument, describe
from polyfuse.registry import Registry, parse_kind


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    if args.json:
        _print_json([plugin.as_dict() for plugin in registry.plugins])
        return 0
    for plugin in registry.plugins:
        print(f"{plugin.distribution} {plugin.version}  [{plugin.name} = {plugin.target}]  {plugin.status}")
        for component in plugin.components:
            print(f"    {component.kind.singular:<13} {component.name}")
        for error in plugin.errors:
            print(f"    error: {error}")
    broken = [p for p in registry.plugins if p.status == "broken"]
    if broken:
        print(f"\n{len(broken)} broken plugin(s); their other components and every other plugin still work.")
    return 0


def cmd_list(args: argparse.Namespace, registry: Registry) -> int:
    kind = parse_kind(args.kind) if args.kind else None
    installed = registry.list(kind, args.pattern)
    missing = registry.not_installed(kind, args.pattern) if args.all else []
    if args.json:
        rows = [
            {"kind": c.kind.value, "name": c.name, "installed": True, "distribution": c.distribution,
             "description": c.description}
            for c in installed
        ] + [
            {"kind": e.kind.value, "name": e.name, "installed": False, "distribution": e.distribution,
             "description": e.description, "install": e.install_command}
            for e in missing
        ]
        _print_json(rows)
        return 0
    if not installed and not missing:
        what = kind.value if kind else "components"
        print(f"no {what} match {args.pattern!r}" + ("" if args.all else " (add --all to include installable ones)"))
        return 0
    for group in [kind] if kind else list(Kind):
        rows_installed = [c for c in installed if c.kind is group]
        rows_missing = [e for e in missing if e.kind is group]
        if not rows_installed and not rows_missing:
            continue
        if kind is None:
            print(f"{group.value}:")
        indent = "  " if kind is None else ""
        width = max(len(r.name) for r in [*rows_installed, *rows_missing])
        for c in rows_installed:
            print(f"{indent}{c.name:<{width}}  {c.description}  [{c.distribution}]")
        for e in rows_missing:
            print(f"{indent}{e.name:<{width}}  {e.description}  (not installed: {e.install_command})")
    return 0


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.config import load_pipeline
    from polyfuse.preflight import check_pipeline

    config = load_pipeline(args.config, registry, args.overrides)
    check_pipeline(config, registry, source=describe(args.config, args.overrides))
    print(f"{describe(args.config, args.overrides)}: valid")
    if args.verbose:
        print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0


def cmd_schema(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.config import pipeline_json_schema

    text = json.dumps(pipeline_json_schema(registry), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _deferred(target: str) -> Callable[[argparse.Namespace, Registry], int]:
    """A handler that imports ``module:function`` only when its command runs (heavy modules stay unloaded)."""

    def handler(args: argparse.Namespace, registry: Registry) -> int:
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(args, registry)

    return handler


def cmd_preferences(args: argparse.Namespace, registry: Registry) -> int:
    from polyfuse.config import EnvConfig
    from polyfuse.datasets.collect import collect_expert_preferences

    if args.pairs <= 0:
        raise PolyfuseError(f"--pairs must be positive, got {args.pairs}")
    folder = collect_expert_preferences(EnvConfig(id=args.env_id, num_envs=8), args.pairs, args.seed, args.output)
    print(f"{args.pairs} preference pairs written to {folder} (use it as dataset: {{name: preferences, "
          f"params: {{path: {folder}}}}})")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of processes, got {value}")
    return value


def build_parser(registry: Registry | None = None) -> argparse.ArgumentParser:
    """The parser of polyfuse's own commands, plus those the loaded plugins register."""
    parser = argparse.ArgumentParser(
        prog="polyfuse",
        description="Multimodal RL from human and AI feedback, composed from registry names.",
    )
    parser.add_argument("--version", action="version", version=f"polyfuse {__version__}")
    parser.add_argument(
        "-p", dest="plugin_switches", action="append", default=[], metavar="no:NAME",
        help="disable a plugin by entry-point or distribution name (repeatable), e.g. -p no:polyfuse-timm",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    plugins = commands.add_parser("plugins", help="installed plugins, their components and errors")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)

    listing = commands.add_parser("list", help="component names, optionally by kind and wildcard")
    listing.add_argument("kind", nargs="?", help=f"one of: {', '.join(k.value for k in Kind)}")
    listing.add_argument("pattern", nargs="?", default="*", help="fnmatch wildcard, e.g. '*tensor*'")
    listing.add_argument("--all", action="store_true", help="include catalogued components not installed")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_list)

    validate = commands.add_parser("validate", help="check a pipeline config against installed plugins")
    validate.add_argument("config", help="path to a YAML pipeline config")
    validate.add_argument("-v", "--verbose", action="store_true", help="print the config with defaults filled")
    add_override_argument(validate)
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser("schema", help="JSON schema of pipeline configs (for editor completion)")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(handler=cmd_schema)

    run = commands.add_parser("run", help="train a pipeline (the embedded default when no config is given)")
    run.add_argument("config", nargs="?", help="path to a YAML pipeline config")
    add_override_argument(run)
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    run.add_argument("--output-dir", help="override trainer.output_dir")
    run.add_argument("--steps", type=int, help="override trainer.total_steps")
    run.add_argument("--seed", type=int, help="override trainer.seed")
    run.add_argument("--json", action="store_true", help="end with the summary as one JSON line")
    run.add_argument("--continue-from", metavar="RUN_DIR",
                     help="set trainer.continue_from: fine-tune the policy RUN_DIR serves, then promote the result "
                          "there only if it is not worse on held-out episodes")
    run.add_argument("--no-promote", action="store_true",
                     help="with continue_from: evaluate candidate and incumbent, record the decision, promote nothing")
    run.add_argument("--nproc", type=_positive, metavar="N",
                     help="train data-parallel in N processes (torchrun's ranks); the config is the whole run: "
                          "env.num_envs and the optimizer's batch_size are split over them")
    run.set_defaults(handler=_deferred("polyfuse.run:run_command"))

    from polyfuse.evaluate import add_arguments as add_eval_arguments

    evaluating = commands.add_parser(
        "eval", help="a trained run's policy on held-out episodes (or other envs), greedy and sampled, with 95%% CIs"
    )
    add_eval_arguments(evaluating)
    evaluating.set_defaults(handler=_deferred("polyfuse.evaluate:command"))

    from polyfuse.serving.command import add_arguments as add_serve_arguments
    from polyfuse.serving.command import add_export_arguments

    serving = commands.add_parser("serve", help="a trained run's policy behind an HTTP API (needs polyfuse[serve])")
    add_serve_arguments(serving)
    serving.set_defaults(handler=_deferred("polyfuse.serving.command:command"))

    exporting = commands.add_parser("export", help="a trained run's policy as a TorchScript or ONNX file")
    add_export_arguments(exporting)
    exporting.set_defaults(handler=_deferred("polyfuse.serving.command:export_command"))

    preferences = commands.add_parser(
        "preferences", help="collect synthetic preference pairs from an environment's expert (for dpo)"
    )
    preferences.add_argument("env_id", help="gymnasium id of an environment with expert labels, e.g. polyfuse/DigitsVQA-v0")
    preferences.add_argument("-o", "--output", required=True, help="folder to write the pairs to")
    preferences.add_argument("--pairs", type=int, default=2000, help="how many pairs (default 2000)")
    preferences.add_argument("--seed", type=int, default=0, help="seeds the environment and the rejected actions")
    preferences.set_defaults(handler=cmd_preferences)

    from polyfuse.compare import add_arguments as add_compare_arguments

    comparing = commands.add_parser("compare", help="train one config with each fuser over seeds: a leaderboard")
    add_compare_arguments(comparing)
    comparing.set_defaults(handler=_deferred("polyfuse.compare:compare"))

    from polyfuse.tuning.command import add_arguments as add_tune_arguments

    tuning = commands.add_parser("tune", help="search a config's settings with Optuna (needs polyfuse[tune])")
    add_tune_arguments(tuning)
    tuning.set_defaults(handler=_deferred("polyfuse.tuning.command:tune"))

    new_plugin = commands.add_parser(
        "new-plugin", help="write a ready plugin distribution polyfuse-NAME (fuser, encoder, reward, ...)"
    )
    new_plugin.add_argument("name", help="the component's registry name, e.g. gated-sum (distribution polyfuse-NAME)")
    new_plugin.add_argument(
        "--kind", required=True, choices=["fuser", "encoder", "reward", "optimizer", "feedback"],
        help="the kind of component the plugin provides",
    )
    new_plugin.add_argument("-o", "--output", default=".", help="folder to create polyfuse-NAME in (default: here)")
    new_plugin.add_argument("--author", help="'Name <email>' for the generated pyproject.toml")
    new_plugin.set_defaults(handler=_deferred("polyfuse.scaffold:command"))

    for command in sorted(registry.commands.values(), key=lambda c: c.name) if registry is not None else []:
        sub = commands.add_parser(command.name, help=f"{command.help} ({command.distribution})")
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _plugin_switches(argv: Sequence[str] | None) -> list[str]:
    """The ``-p no:NAME`` switches, read before the full parse: they decide which plugins' commands exist."""
    switches = argparse.ArgumentParser(add_help=False)
    switches.add_argument("-p", dest="plugin_switches", action="append", default=[])
    known, _ = switches.parse_known_args(argv)
    return list(known.plugin_switches)


def _disabled_plugins(switches: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    disabled = []
    for switch in switches:
        if not switch.startswith("no:") or len(switch) == 3:
            parser.error(f"-p takes no:NAME to disable a plugin, got {switch!r}")
        disabled.append(switch[3:])
    return disabled


def main(argv: Sequence[str] | None = None) -> int:
    disabled = _disabled_plugins(_plugin_switches(argv), build_parser())
    try:
        registry = Registry.load(disabled=disabled)
        args = build_parser(registry).parse_args(argv)
        return args.handler(args, registry)
    except PolyfuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
