"""The promotion gate at the end of a continued run (``trainer.continue_from``).

The candidate (the run's final policy) and the incumbent (the policy the served run answers with *now*,
promoted pointer followed) play the same held-out episodes, with the same seeds, through the trainer's
evaluators. Rule: promote iff, in the primary eval mode, candidate success >= incumbent success -
``trainer.promotion.tolerance``. Promoting copies the candidate's checkpoint to ``promoted-STEP/`` in the
run's output_dir (outside the rotation of ``checkpoint/``, so a later resume of this run cannot change what
is served) and points the served run at it (:func:`~polyfuse.training.promotion.write_promotion`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from polyfuse.config import PipelineConfig, PromotionConfig
from polyfuse.registry import Registry
from polyfuse.training.api import RLOptimizer
from polyfuse.training.eval_report import eval_metrics, nest
from polyfuse.training.evaluation import Evaluator
from polyfuse.training.promotion import Promotion, promotion_lock, read_promotion, write_promotion

PROMOTED_PREFIX = "promoted-"


def passes(candidate: float, incumbent: float, tolerance: float) -> bool:
    """The rule: the candidate's success is not below the incumbent's by more than ``tolerance``."""
    return candidate >= incumbent - tolerance


def run_gate(
    config: PipelineConfig,
    registry: Registry,
    candidate: RLOptimizer,
    candidate_checkpoint: Path,
    step: int,
    evaluators: Mapping[str | None, Evaluator],
    on_round: Callable[[int], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """Evaluate both policies, decide, promote when the rule and ``promotion.promote`` allow; the decision.

    None when ``stopped()`` turned true meanwhile (a stop signal): nothing promoted, ``--resume`` judges again.
    The pointer is written only if it still names the incumbent that was evaluated: when another gate promoted
    in the meantime, the candidate is judged against that new incumbent instead.
    """
    from polyfuse.training.saved_policy import load_saved_policy

    run_dir = Path(config.trainer.continue_from)  # type: ignore[arg-type]
    settings, modes = config.trainer.promotion, config.trainer.eval_modes
    figures = {"candidate": eval_metrics({n: e.evaluate(candidate, modes, on_round) for n, e in evaluators.items()},
                                         modes)}
    while not stopped():
        pointer = read_promotion(run_dir)
        incumbent = load_saved_policy(run_dir, registry)
        try:
            figures["incumbent"] = eval_metrics({n: e.evaluate(incumbent.optimizer, modes, on_round)
                                                 for n, e in evaluators.items()}, modes)
        finally:
            incumbent.close()
        if stopped():
            break
        with promotion_lock(run_dir):
            if read_promotion(run_dir) != pointer:
                continue  # promoted by another gate while this one evaluated: judge against what is served now
            return _decide(settings, modes[0], run_dir, figures, (candidate_checkpoint, step),
                           (incumbent.location, incumbent.step))
    return None


def _decide(settings: PromotionConfig, primary: str, run_dir: Path, figures: dict[str, dict[str, float]],
            candidate: tuple[Path, int], incumbent: tuple[Path, int]) -> dict[str, Any]:
    """Apply the rule to both policies' figures; promote when it holds and ``settings.promote``."""
    ok = passes(figures["candidate"]["eval/success"], figures["incumbent"]["eval/success"], settings.tolerance)
    decision: dict[str, Any] = {
        "served_run": str(run_dir),
        "rule": f"candidate {primary} success >= incumbent {primary} success - {settings.tolerance:g}",
        "passed": ok,
        "promoted": ok and settings.promote,
        "candidate": {"checkpoint": str(candidate[0]), "step": candidate[1], **nest(figures["candidate"]),
                      "primary": primary},
        "incumbent": {"checkpoint": str(incumbent[0]), "step": incumbent[1], **nest(figures["incumbent"]),
                      "primary": primary},
    }
    if decision["promoted"]:
        promoted = _keep(*candidate)
        decision["candidate"]["checkpoint"] = str(promoted)
        pointer = write_promotion(run_dir, Promotion(promoted, candidate[1], {
            "candidate": figures["candidate"], "incumbent": figures["incumbent"],
            "incumbent_checkpoint": str(incumbent[0]), "rule": decision["rule"]}))
        decision["pointer"] = str(pointer)
    return decision


def _keep(checkpoint: Path, step: int) -> Path:
    """A copy of ``checkpoint`` beside it (same output_dir: its frozen encoders stay reachable) that no later
    checkpoint of this run rotates away."""
    kept = checkpoint.parent / f"{PROMOTED_PREFIX}{step}"
    staging, replaced = kept.with_name(kept.name + ".tmp"), kept.with_name(kept.name + ".old")
    for leftover in (staging, replaced):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    if kept.exists():  # promoted before (a resumed run judged again) and maybe served: swapped, not deleted first
        kept.rename(replaced)
    staging.rename(kept)
    shutil.rmtree(replaced, ignore_errors=True)
    return kept

