"""The learning curve: train and held-out success and return against steps, held-out with 95% bands.

Held-out figures are drawn for each evaluation mode the metrics hold
(``eval/greedy/...``, ``eval/sampled/...``), each with its interval as a
shaded band; metrics written before modes existed have ``eval/success``
alone, drawn as one held-out line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT_FILE = "learning_curve.png"
MODE_STYLES = {"greedy": ("o-", "tab:orange"), "sampled": ("s-", "tab:green")}


def plot_learning_curve(records: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Draw ``metrics.jsonl`` records into a PNG (matplotlib's Agg canvas: no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    success_axes, return_axes = figure.subplots(1, 2)
    panels = ((success_axes, "success", "success rate"), (return_axes, "return", "mean return"))
    modes = [mode for mode in MODE_STYLES if any(f"eval/{mode}/success" in r for r in records)]
    for axes, metric, label in panels:
        steps, values = _series(records, "train", f"train/{metric}")
        axes.plot(steps, values, "-", label="train (recent episodes)", color="tab:blue")
        for mode in modes:
            style, colour = MODE_STYLES[mode]
            key = f"eval/{mode}/{metric}"
            steps, values = _series(records, "eval", key)
            axes.plot(steps, values, style, label=f"held-out, {mode}", markersize=4, color=colour)
            band_steps, low = _series(records, "eval", f"{key}_low")
            _, high = _series(records, "eval", f"{key}_high")
            if band_steps:
                axes.fill_between(band_steps, low, high, color=colour, alpha=0.2, linewidth=0)
        if not modes:
            steps, values = _series(records, "eval", f"eval/{metric}")
            axes.plot(steps, values, "o-", label="held-out", markersize=4, color="tab:orange")
        axes.set_xlabel("environment steps")
        axes.set_ylabel(label + (" (bands: 95% CI)" if modes else ""))
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    success_axes.set_ylim(-0.02, 1.02)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path


def _series(records: Sequence[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]
