"""Evaluation results as figures with 95% intervals: the ``eval/`` lines of metrics.jsonl and the summary.

Keys (``MODE`` is ``greedy`` or ``sampled``):

- ``eval/MODE/success`` with ``_low``/``_high`` (Wilson), ``eval/MODE/return``
  with ``_low``/``_high`` (percentile bootstrap), ``eval/MODE/length``;
- ``eval/success``, ``eval/return``, ``eval/length``: the PRIMARY mode's
  values (the first of ``trainer.eval_modes``, greedy by default), which
  tools that read one figure (compare, tuning) use;
- ``eval/episodes``: episodes per environment and mode.

With an evaluation suite, the ``eval/MODE/...`` figures aggregate the
suite's environments (the mean over environments; success's interval is
Wilson's on the pooled episodes, conservative for a mean of equally sized
groups; return's a stratified bootstrap), ``eval/MODE/success_iqm`` and
``eval/MODE/return_iqm`` (with intervals, stratified bootstrap) are the
interquartile means over environments, ``eval/envs`` counts them, and each
environment's own figures are under ``eval/suite/NAME/MODE/...``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polyfuse.training.evaluation import Episodes
from polyfuse.training.intervals import bootstrap_interval, iqm, wilson_interval

PRIMARY_FIELDS = ("success", "return", "length")


def mode_metrics(episodes: Episodes) -> dict[str, float]:
    """One environment's figures in one mode."""
    trials, successes = len(episodes), int(np.sum(episodes.successes))
    success_low, success_high = wilson_interval(successes, trials)
    return_low, return_high = bootstrap_interval([episodes.returns])
    return {
        "success": successes / trials,
        "success_low": success_low,
        "success_high": success_high,
        "return": float(np.mean(episodes.returns)),
        "return_low": return_low,
        "return_high": return_high,
        "length": float(np.mean(episodes.lengths)),
    }


def suite_metrics(per_env: Sequence[Episodes]) -> dict[str, float]:
    """Aggregates over a suite's environments in one mode: mean and interquartile mean, with intervals."""
    successes = [np.asarray(e.successes, dtype=np.float64) for e in per_env]
    returns = [np.asarray(e.returns, dtype=np.float64) for e in per_env]
    pooled_low, pooled_high = wilson_interval(int(sum(s.sum() for s in successes)), sum(s.size for s in successes))
    return_low, return_high = bootstrap_interval(returns)
    success_iqm_low, success_iqm_high = bootstrap_interval(successes, iqm)
    return_iqm_low, return_iqm_high = bootstrap_interval(returns, iqm)
    return {
        "success": float(np.mean([s.mean() for s in successes])),
        "success_low": pooled_low,
        "success_high": pooled_high,
        "return": float(np.mean([r.mean() for r in returns])),
        "return_low": return_low,
        "return_high": return_high,
        "length": float(np.mean([np.mean(e.lengths) for e in per_env])),
        "success_iqm": iqm([s.mean() for s in successes]),
        "success_iqm_low": success_iqm_low,
        "success_iqm_high": success_iqm_high,
        "return_iqm": iqm([r.mean() for r in returns]),
        "return_iqm_low": return_iqm_low,
        "return_iqm_high": return_iqm_high,
    }


def eval_metrics(results: Mapping[str | None, Mapping[str, Episodes]], modes: Sequence[str]) -> dict[str, float]:
    """The flat ``eval/`` figures of one evaluation.

    ``results`` maps each environment's name to its episodes by mode; a
    single environment evaluated alone (no suite) has the name ``None``.
    """
    if not modes:
        raise ValueError("an evaluation needs at least one mode")
    episodes = {len(by_mode[mode]) for by_mode in results.values() for mode in modes}
    metrics: dict[str, float] = {}
    suite = list(results) != [None]
    for mode in modes:
        if suite:
            figures = suite_metrics([by_mode[mode] for by_mode in results.values()])
            for name, by_mode in results.items():
                metrics.update({f"eval/suite/{name}/{mode}/{k}": v for k, v in mode_metrics(by_mode[mode]).items()})
        else:
            figures = mode_metrics(results[None][mode])
        metrics.update({f"eval/{mode}/{key}": value for key, value in figures.items()})
    primary = modes[0]
    metrics.update({f"eval/{key}": metrics[f"eval/{primary}/{key}"] for key in PRIMARY_FIELDS})
    metrics["eval/episodes"] = max(episodes)
    if suite:
        metrics["eval/envs"] = len(results)
    return metrics


def nest(metrics: Mapping[str, Any], prefix: str = "eval/") -> dict[str, Any]:
    """``{"eval/greedy/success": x}`` → ``{"greedy": {"success": x}}`` (the summary's ``eval`` part)."""
    nested: dict[str, Any] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        *parents, leaf = key.removeprefix(prefix).split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested

