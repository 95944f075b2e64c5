"""Registers ``polyfuse/SpokenDigitsVQA-v0`` with gymnasium when imported.

polyfuse imports this module when a config names the id (the ``polyfuse.environments`` entry point);
elsewhere, ``import polyfuse_audio.envs`` before ``gymnasium.make``.
"""

from __future__ import annotations

import gymnasium as gym

SPOKEN_DIGITS_VQA_ID = "polyfuse/SpokenDigitsVQA-v0"

if SPOKEN_DIGITS_VQA_ID not in gym.registry:
    gym.register(
        id=SPOKEN_DIGITS_VQA_ID,
        entry_point="polyfuse_audio.spoken_digits:SpokenDigitsVQAEnv",
        vector_entry_point="polyfuse_audio.spoken_digits:SpokenDigitsVQAVectorEnv",
    )
