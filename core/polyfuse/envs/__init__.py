"""polyfuse's environments and environment factory; importing this registers the gymnasium ids.

- ``polyfuse/DigitsVQA-v0``: questions about handwritten digit scans (see :mod:`.digits_vqa`).
- Any ``BabyAI-*`` / ``MiniGrid-*`` id, with ``pip install polyfuse[babyai]`` (see :mod:`.babyai`).
"""

from __future__ import annotations

import gymnasium as gym

DIGITS_VQA_ID = "polyfuse/DigitsVQA-v0"

if DIGITS_VQA_ID not in gym.registry:
    gym.register(
        id=DIGITS_VQA_ID,
        entry_point="polyfuse.envs.digits_vqa:DigitsVQAEnv",
        vector_entry_point="polyfuse.envs.digits_vqa:DigitsVQAVectorEnv",
    )

from polyfuse.envs.factory import action_names, check_env_id, eval_kwargs, make_env, make_vector_env  # noqa: E402

__all__ = ["DIGITS_VQA_ID", "action_names", "check_env_id", "eval_kwargs", "make_env", "make_vector_env"]
