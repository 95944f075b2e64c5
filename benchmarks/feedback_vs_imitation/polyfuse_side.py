"""polyfuse's side of run.py: ``polyfuse run`` on a pipeline config, with the benchmark's task registered.

The env id fvi/CartPoleDict-v0 lives in this folder's task.py, not in a plugin: polyfuse's config takes a
registered gymnasium id (a ``module:EnvId`` id is refused before gymnasium could import the module), so
this script imports task.py and then calls the CLI in-process. It also times the preference model's
``update()`` (asking the annotator + training the reward model + renormalising), its ``_train()`` or
``fit()`` (the Bradley-Terry gradient steps alone) and ``score()`` (the learned reward read by PPO), by wrapping the
methods, without changing them.

Prints polyfuse's summary (``--json``) and then one JSON line of timings:
    python polyfuse_side.py CONFIG --seed 0 --output-dir DIR
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task  # noqa: F401  (registers fvi/CartPoleDict-v0)
from polyfuse.cli import main
from polyfuse_feedback.model import PreferenceModel
from polyfuse_feedback.synthetic import SyntheticAnnotator

TIMES = {"reward_update_s": 0.0, "reward_train_s": 0.0, "reward_score_s": 0.0, "reward_updates": 0,
         "queries": 0, "equal_returns": 0}


def timed(method, key):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            TIMES[key] += time.perf_counter() - started
            if key == "reward_update_s":
                TIMES["reward_updates"] += 1
    return wrapper


PreferenceModel.update = timed(PreferenceModel.update, "reward_update_s")
PreferenceModel.score = timed(PreferenceModel.score, "reward_score_s")
# The Bradley-Terry steps alone: _train() up to commit 40bd57c, fit(steps) after the plugin's label store.
TRAIN_METHOD = "fit" if hasattr(PreferenceModel, "fit") else "_train"
setattr(PreferenceModel, TRAIN_METHOD, timed(getattr(PreferenceModel, TRAIN_METHOD), "reward_train_s"))


def count_equal_returns(method):
    """Counts the queries whose two fragments have the same true return (no information on which is better)."""
    @functools.wraps(method)
    def wrapper(self, queries):
        pairs = [q for q in queries if getattr(q, "second", None) is not None]  # comparisons, not ratings
        TIMES["queries"] += len(pairs)
        TIMES["equal_returns"] += sum(float(sum(q.first.env_rewards)) == float(sum(q.second.env_rewards))
                                      for q in pairs)
        return method(self, queries)
    return wrapper


SyntheticAnnotator.label = count_equal_returns(SyntheticAnnotator.label)

if __name__ == "__main__":
    code = main(["run", *sys.argv[1:], "--json"])
    print(json.dumps({"timings": TIMES}), flush=True)
    sys.exit(code)
