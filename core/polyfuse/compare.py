"""``polyfuse compare``: one pipeline config, trained with each of several fusers over several seeds.

Every cell (fuser, seed) is a ``polyfuse run`` of the same config with only ``fuser``,
``trainer.seed`` and ``trainer.output_dir`` changed, in a process of its own with one torch thread,
``jobs`` at a time. A finished cell's summary is kept in ``OUTPUT/cells/``, so an interrupted
comparison picks up where it stopped (an unfinished cell resumes from its last checkpoint). A cell
that fails is reported in the table with its error, and the others go on.

``OUTPUT/comparison.json`` records the config the cells were trained with (after ``--set``), so that a
rerun with another config is refused rather than mixed into the same table.

The leaderboard (printed, and written as ``leaderboard.md``, ``leaderboard.csv`` and
``leaderboard.png``) gives per fuser: held-out success, mean and 95% confidence interval over seeds
(Student's t), trainable parameters of the policy network (the fuser's own in brackets), training
time and env steps per second.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError
from polyfuse.overrides import add_override_argument, describe

CELLS = "cells"
COMPARED = "comparison.json"  # the config (after --set) and --steps the cells were trained with
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}  # Student's t, two-sided 95%, by degrees of freedom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the pipeline config to compare fusers on")
    add_override_argument(parser)
    parser.add_argument("--fusers", help="comma-separated fuser names (default: every installed fuser that fits "
                        "the pipeline)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated trainer seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, help="override trainer.total_steps (the same budget for every cell)")
    parser.add_argument("--jobs", type=int, help="cells trained at once (default: CPU cores; 1 torch thread each)")
    parser.add_argument("-o", "--output", help="folder for runs and the leaderboard (default: "
                        "runs/compare-<config name>); rerun with the same folder to resume")
    parser.add_argument("--json", action="store_true", help="end with the leaderboard rows as one JSON line")


@dataclass
class Row:
    """One fuser's line of the leaderboard."""

    fuser: str
    successes: list[float] = field(default_factory=list)
    train_times: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)
    parameters: int | None = None
    fuser_parameters: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return sum(self.successes) / len(self.successes) if self.successes else None

    @property
    def half_width(self) -> float | None:
        """Half the 95% confidence interval of the mean success; ``None`` with fewer than 2 seeds."""
        n = len(self.successes)
        if n < 2:
            return None
        mean = self.mean or 0.0
        sd = math.sqrt(sum((s - mean) ** 2 for s in self.successes) / (n - 1))
        return t_quantile(n - 1) * sd / math.sqrt(n)

    def as_json(self) -> dict[str, Any]:
        return {"fuser": self.fuser, "success_mean": self.mean, "success_ci95": self.half_width,
                "successes": self.successes, "parameters": self.parameters, "fuser_parameters": self.fuser_parameters,
                "train_time_s": _mean(self.train_times), "steps_per_second": _mean(self.steps_per_second),
                "errors": self.errors}


def t_quantile(degrees: int) -> float:
    """Student's t 0.975 quantile (the nearest tabulated degrees of freedom below; 1.96 from 31 on)."""
    if degrees > 30:
        return 1.96
    return T_975[max(d for d in T_975 if d <= degrees)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(args: argparse.Namespace, registry: Any) -> int:
    from polyfuse.config import read_pipeline_data, validate_pipeline

    base = read_pipeline_data(args.config, args.overrides)
    source = describe(args.config, args.overrides)
    validate_pipeline(base, registry, source=source)
    seeds = _numbers(args.seeds, "--seeds")
    output = Path(args.output or f"runs/compare-{Path(args.config).stem}")
    _claim(output, base, args.steps)
    fusers, unfit = _fusers(args, base, source, registry)
    for name, reason in unfit.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not fusers:
        raise PolyfuseError("no fuser to compare: every one named failed validation (see above)")
    cells = [(fuser, seed) for fuser in fusers for seed in seeds]
    jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(cells)))
    print(f"comparing {len(fusers)} fusers x {len(seeds)} seeds on {source} ({jobs} at a time); runs in "
          f"{output}", file=sys.stderr)
    results = _run_cells(base, cells, args.steps, output, jobs)
    rows = [_row(fuser, [results[(fuser, s)] for s in seeds], base, registry) for fuser in fusers]
    rows.sort(key=lambda r: (r.mean is None, -(r.mean or 0.0)))
    title = f"{source}: held-out success over seeds {','.join(map(str, seeds))}"
    table = markdown(rows, title)
    print(table)
    write_leaderboard(rows, output, title, table)
    print(f"leaderboard written to {output}/leaderboard.md, .csv and .png", file=sys.stderr)
    if args.json:
        print(json.dumps([row.as_json() for row in rows]))
    return 0


def _numbers(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PolyfuseError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise PolyfuseError(f"{flag} names none")
    return values


def _with_fuser(base: dict[str, Any], fuser: str) -> dict[str, Any]:
    data = copy.deepcopy(base)
    current = data.get("fuser")
    current_name = current if isinstance(current, str) else (current or {}).get("name")
    if current_name != fuser:  # the config's own params are kept for its own fuser only
        data["fuser"] = {"name": fuser}
    return data


def _claim(output: Path, base: dict[str, Any], steps: int | None) -> None:
    """Record what ``output`` compares; refuse to resume it with another config (cells would mix)."""
    from polyfuse.config import config_differences

    current = json.loads(json.dumps({"config": base, "steps": steps}, default=str))
    record = output / COMPARED
    if record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8"))
        changed = config_differences(recorded["config"], current["config"])
        changed += ["--steps"] if recorded["steps"] != current["steps"] else []
        if changed:
            raise PolyfuseError(
                f"{output} holds a comparison of another config (changed: {', '.join(changed)}); resume it with "
                "the same config, --set and --steps, or compare into another folder with -o DIR")
        return
    output.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(current, indent=2), encoding="utf-8")


def _fusers(args: argparse.Namespace, base: dict[str, Any], source: str,
            registry: Any) -> tuple[list[str], dict[str, str]]:
    """The fusers to compare, and those left out with the reason (they do not fit this pipeline)."""
    from polyfuse.config import validate_pipeline
    from polyfuse.registry import Kind

    installed = [component.name for component in registry.list(Kind.FUSER)]
    names = [n.strip() for n in args.fusers.split(",") if n.strip()] if args.fusers else installed
    fit, unfit = [], {}
    for name in dict.fromkeys(names):
        try:
            validate_pipeline(_with_fuser(base, name), registry, source=f"{source}, fuser {name}")
            fit.append(name)
        except PolyfuseError as exc:
            if args.fusers:  # asked for by name: an error the user should see, but not fatal for the rest
                unfit[name] = str(exc).splitlines()[-1].strip()
            else:
                unfit[name] = "does not fit this pipeline: " + str(exc).splitlines()[-1].strip()
    return fit, unfit


def _cell_file(output: Path, fuser: str, seed: int) -> Path:
    return output / CELLS / f"{fuser}-seed{seed}.json"


def _run_cells(base: dict[str, Any], cells: list[tuple[str, int]], steps: int | None, output: Path,
               jobs: int) -> dict[tuple[str, int], dict[str, Any]]:
    from tqdm import tqdm

    (output / CELLS).mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for fuser, seed in cells:
        done = _cell_file(output, fuser, seed)
        if done.is_file():
            results[(fuser, seed)] = json.loads(done.read_text(encoding="utf-8"))
        else:
            todo.append((fuser, seed))
    with tqdm(total=len(cells), initial=len(cells) - len(todo), unit="run", desc="compare") as bar, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, tuple[str, int]] = {
            pool.submit(_run_cell, base, fuser, seed, steps, output): (fuser, seed) for fuser, seed in todo}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                results[cell] = future.result()
                if "error" not in results[cell]:  # failures are retried on the next run of the comparison
                    _cell_file(output, *cell).write_text(json.dumps(results[cell]), encoding="utf-8")
                bar.set_postfix_str(f"{cell[0]} seed {cell[1]}: " + (
                    "failed" if "error" in results[cell] else f"{results[cell]['eval'].get('success', 0):.2f}"))
                bar.update()
    return results


def _run_cell(base: dict[str, Any], fuser: str, seed: int, steps: int | None, output: Path) -> dict[str, Any]:
    """``polyfuse run --json`` of one cell in its own process; its summary, or ``{"error": ...}``."""
    import yaml

    run_dir = output / "runs" / fuser / f"seed{seed}"
    data = _with_fuser(base, fuser)
    trainer = data.setdefault("trainer", {})
    trainer.update(seed=seed, output_dir=str(run_dir))
    if steps is not None:
        trainer["total_steps"] = steps
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)  # the file's modality order: the network `polyfuse run` builds
    command = [sys.executable, "-m", "polyfuse", "run", handle.name, "--json"]
    from polyfuse.training.checkpoint import checkpoint_location

    if run_dir.is_dir() and checkpoint_location(run_dir) is not None:
        command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "%|" not in line]
        return {"error": lines[-1].strip() if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(fuser: str, results: list[dict[str, Any]], base: dict[str, Any], registry: Any) -> Row:
    row = Row(fuser)
    for result in results:
        if "error" in result:
            row.errors.append(result["error"])
            continue
        row.successes.append(float(result["eval"].get("success", 0.0)))
        row.train_times.append(float(result["wall_time_s"]))
        row.steps_per_second.append(float(result["steps_per_second"]))
    try:
        row.parameters, row.fuser_parameters = count_parameters(_with_fuser(base, fuser), registry)
    except Exception as exc:  # noqa: BLE001 - a count is worth less than the row
        row.errors.append(f"parameters not counted: {exc}")
    return row


def count_parameters(data: dict[str, Any], registry: Any) -> tuple[int, int]:
    """Trainable parameters of the pipeline's network (frozen encoders excluded), and of its fuser alone."""
    import torch

    from polyfuse.config import validate_pipeline
    from polyfuse.envs import make_env
    from polyfuse.network import NetworkFactory

    config = validate_pipeline(data, registry)
    if config.env is None:
        raise PolyfuseError("no env: nothing to build the network's observation space from")
    env = make_env(config.env.id, config.env.kwargs)
    try:
        torch.manual_seed(0)
        network = NetworkFactory(config, env.observation_space, registry)()
    finally:
        env.close()
    trainable = lambda module: sum(p.numel() for p in module.parameters() if p.requires_grad)  # noqa: E731
    return trainable(network), trainable(network.fuser)


def markdown(rows: list[Row], title: str) -> str:
    lines = [f"**{title}**", "", "| fuser | held-out success | params (fuser) | train time | env steps/s | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row.mean is None:
            success = "failed: " + (row.errors[0] if row.errors else "no result").replace("|", "/")[:160]
        else:
            success = f"{row.mean:.3f}" + (f" ± {row.half_width:.3f}" if row.half_width is not None else "")
        params = f"{row.parameters:,} ({row.fuser_parameters:,})" if row.parameters is not None else "–"
        time_s = f"{_mean(row.train_times):.0f} s" if row.train_times else "–"
        speed = f"{_mean(row.steps_per_second):.0f}" if row.steps_per_second else "–"
        failed = f" ({len(row.errors)} failed)" if row.errors and row.mean is not None else ""
        lines.append(f"| {row.fuser} | {success} | {params} | {time_s} | {speed} | {len(row.successes)}{failed} |")
    return "\n".join(lines)


def write_leaderboard(rows: list[Row], output: Path, title: str, table: str) -> None:
    (output / "leaderboard.md").write_text(table + "\n", encoding="utf-8")
    with (output / "leaderboard.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fuser", "success_mean", "success_ci95", "seeds", "parameters", "fuser_parameters",
                         "train_time_s", "steps_per_second", "errors"])
        for row in rows:
            writer.writerow([row.fuser, row.mean, row.half_width, len(row.successes), row.parameters,
                             row.fuser_parameters, _mean(row.train_times), _mean(row.steps_per_second),
                             " / ".join(row.errors)])
    _bar_chart(rows, output / "leaderboard.png", title)


def _bar_chart(rows: list[Row], path: Path, title: str) -> None:
    bar_chart_figure(rows, title).savefig(path)


def bar_chart_figure(rows: list[Row], title: str) -> Any:
    """The leaderboard's bar chart (a matplotlib Figure with an Agg canvas): mean success with 95% CIs."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [row for row in rows if row.mean is not None]
    width = max(4.0, 0.8 * len(shown) + 1.5)
    figure = Figure(figsize=(width, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.bar(range(len(shown)), [row.mean for row in shown], yerr=[row.half_width or 0.0 for row in shown],
             capsize=4, color="tab:blue")
    axes.set_xticks(range(len(shown)), [row.fuser for row in shown], rotation=30, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("held-out success (95% CI)")
    wrapped = textwrap.fill(title, width=int(width * 10), break_on_hyphens=False)  # config paths can be long
    axes.set_title(wrapped, fontsize=9)
    figure.tight_layout()
    return figure
