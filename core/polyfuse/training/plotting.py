"""The learning curve: train and held-out success and return against environment steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT_FILE = "learning_curve.png"


def plot_learning_curve(records: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Draw ``metrics.jsonl`` records into a PNG (matplotlib's Agg canvas: no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    success_axes, return_axes = figure.subplots(1, 2)
    panels = ((success_axes, "success", "success rate"), (return_axes, "return", "mean return"))
    for axes, metric, label in panels:
        for kind, style, name in (("train", "-", "train (recent episodes)"), ("eval", "o-", "held-out")):
            steps, values = _series(records, kind, f"{kind}/{metric}")
            axes.plot(steps, values, style, label=name, markersize=4)
        axes.set_xlabel("environment steps")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    success_axes.set_ylim(-0.02, 1.02)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path


def _series(records: Sequence[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]
