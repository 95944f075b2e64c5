"""What a study leaves in its output folder, rewritten after every trial.

- ``best.yaml``: the best trial's whole pipeline config, for ``polyfuse run`` as is (its output_dir
  is ``OUTPUT/best``, so running it leaves the trial's own results alone);
- ``trials.csv`` and ``trials.md``: every trial, its state, value, parameters and run folder;
- ``history.png``, ``importances.png``, ``intermediate.png``: Optuna's optimisation history, the
  parameters' importances (once two trials completed with a parameter that varies) and the
  held-out evaluations each trial reported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from polyfuse.tuning.space import Space
from polyfuse.tuning.study import best_trial

BEST_FILE = "best.yaml"
BEST_RUN_DIR = "best"
PLOTS = {"history": "history.png", "importances": "importances.png", "intermediate": "intermediate.png"}


def write_report(study: Any, space: Space, output: Path, metric: str, config_source: str) -> list[str]:
    """Write every file; returns notes on what could not be written yet (e.g. importances with one trial)."""
    rows = trial_rows(study, space, metric)
    write_table(rows, output)
    write_best(study, space, output, metric, config_source)
    return write_plots(study, output, metric)


def trial_rows(study: Any, space: Space, metric: str) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        intermediate = trial.intermediate_values
        note = trial.user_attrs.get("error", "")
        if "pruned_at" in trial.user_attrs:
            note = f"pruned at step {trial.user_attrs['pruned_at']}"
        if "retry_of" in trial.user_attrs:
            note = f"re-run of trial {trial.user_attrs['retry_of']}" + (f"; {note}" if note else "")
        if trial.user_attrs.get("baseline"):
            note = "the config's own values" + (f"; {note}" if note else "")
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower(),
            metric: trial.value,
            "last_step": max(intermediate) if intermediate else None,
            "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
            **{path: _show(value) for path, value in space.decode(trial.params).items()},
            "run_dir": trial.user_attrs.get("run_dir", ""),
            "note": note,
        })
    return rows


def _show(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)


def write_table(rows: list[dict[str, Any]], output: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (output / "trials.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    (output / "trials.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")[:200]


def write_best(study: Any, space: Space, output: Path, metric: str, config_source: str) -> Path | None:
    """The best trial's pipeline config, with a header saying where it came from; None before a trial completes."""
    import yaml

    best = best_trial(study)
    if best is None:
        return None
    values = space.decode(best.params)
    data = space.config(values)
    data.setdefault("trainer", {})["output_dir"] = str(output / BEST_RUN_DIR)
    baseline = next((t for t in study.get_trials(deepcopy=False)
                     if t.user_attrs.get("baseline") and t.value is not None), None)
    header = [f"Best of {len(study.trials)} trials of `polyfuse tune {config_source} --space {space.source}`:",
              f"trial {best.number}, {metric} {best.value:.4g}"
              + (f" (the config's own values, trial {baseline.number}: {baseline.value:.4g})" if baseline else ""),
              *(f"  {path}: {json.dumps(value)}" for path, value in values.items()),
              f"Run it as is: polyfuse run {output / BEST_FILE}"]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(data, sort_keys=False)
    path = output / BEST_FILE
    path.write_text(text, encoding="utf-8")
    return path


def write_plots(study: Any, output: Path, metric: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import (
        plot_intermediate_values,
        plot_optimization_history,
        plot_param_importances,
    )

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = {name for name in {n for t in complete for n in t.params}
               if len({json.dumps(t.params.get(name)) for t in complete}) > 1}
    plots = {"history": lambda: plot_optimization_history(study, target_name=metric),
             "intermediate": lambda: plot_intermediate_values(study)}
    notes = []
    if len(complete) >= 2 and varying:
        plots["importances"] = lambda: plot_param_importances(study, target_name=metric)
    else:
        notes.append("importances.png needs 2 complete trials with a parameter that varies: not written yet")
    if not complete:
        del plots["history"]
    for name, plot in plots.items():
        try:
            axes = plot()
        except (ValueError, RuntimeError) as exc:  # Optuna refuses what it cannot compute: say so, keep going
            notes.append(f"{PLOTS[name]} not written: {exc}")
            continue
        figure = axes.figure
        figure.set_size_inches(7, 4.5)
        figure.savefig(output / PLOTS[name], dpi=100, bbox_inches="tight")
        plt.close(figure)
    return notes
