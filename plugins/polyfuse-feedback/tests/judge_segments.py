"""For the judges' tests: DigitsVQA-shaped segments (one step, an 8x8 image, a question, the expert's answer),
and a plugin registering the judges alone."""

from __future__ import annotations

from typing import Any

import numpy as np
from polyfuse import hookimpl
from polyfuse.rewards import Segment

ANSWERS = [str(d) for d in range(10)] + ["yes", "no"]


def digits_segment(question: str, answer: int, expert: int, shade: int = 0) -> Segment:
    """One answered DigitsVQA episode; ``shade`` fills the image (to tell images apart)."""
    return Segment(
        observations={"image": np.full((1, 8, 8, 1), shade, np.uint8), "question": (question,)},
        actions=np.array([answer]),
        env_rewards=np.array([float(answer == expert)], np.float32),
        infos=({"success": np.bool_(answer == expert), "expert_action": np.int64(expert)},),
        terminated=True,
        truncated=False,
        env_index=0,
    )


class JudgesPlugin:
    """Registers the three judges; use with ``make_registry(JudgesPlugin, installed=False)`` (the installed
    polyfuse-feedback may register them too, and a name registered twice is refused)."""

    @staticmethod
    @hookimpl
    def register_feedback(register: Any) -> None:
        from polyfuse_feedback.judges import register_judges

        register_judges(register)
