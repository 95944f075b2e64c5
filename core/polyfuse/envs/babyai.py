"""BabyAI and MiniGrid levels as polyfuse observations: image + mission text + direction.

minigrid already returns a Dict observation, but its ``mission`` space is a
custom ``MissionSpace`` that text encoders and vector envs do not know; it is
replaced by a :class:`gymnasium.spaces.Text`. BabyAI levels can also label
every step with the action minigrid's BabyAI bot would take, for supervised
warm start. ``info["facing"]`` says in words what the agent faces, so that a
judge can compare the outcome with the mission ("red ball" for "go to the red ball").
"""

from __future__ import annotations

import contextlib
import io
import string
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from polyfuse.errors import PolyfuseError

MINIGRID_PREFIXES = ("BabyAI-", "MiniGrid-")
INSTALL_HINT = "pip install polyfuse[babyai]"
MISSION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
MAX_MISSION_LENGTH = 256
# Highest object, colour and state codes of MiniGrid's symbolic cells (minigrid.core.constants: 'agent' is
# object 10, 'grey' colour 5; state 'locked' is 2, and fully observed grids put the direction, up to 3, there).
SYMBOLIC_MAX = (10, 5, 3)


def is_minigrid_id(env_id: str) -> bool:
    return env_id.startswith(MINIGRID_PREFIXES)


def import_minigrid() -> Any:
    """Import minigrid (which registers its environments), or explain how to install it."""
    try:
        import minigrid
    except ImportError:
        raise PolyfuseError(
            f"BabyAI and MiniGrid environments need the optional minigrid package: {INSTALL_HINT}"
        ) from None
    return minigrid


def is_minigrid_env(env: gym.Env) -> bool:
    try:
        from minigrid.minigrid_env import MiniGridEnv
    except ImportError:
        return False
    return isinstance(env.unwrapped, MiniGridEnv)


def is_babyai_level(env: gym.Env) -> bool:
    """True for BabyAI levels, the ones with instructions the BabyAI bot can follow."""
    from minigrid.envs.babyai.core.roomgrid_level import RoomGridLevel

    return isinstance(env.unwrapped, RoomGridLevel)


def symbolic_view_space(space: spaces.Box) -> spaces.Box:
    """MiniGrid's symbolic ``image`` with its true bounds: object, colour and state codes per cell.

    MiniGrid declares 0-255, as if pixels, but the cells hold codes up to :data:`SYMBOLIC_MAX` (the
    agent's direction in the state channel of fully observed grids included). Declared that way, an
    encoder that rescales by the bounds (``flatten``) gets inputs in [0, 1] instead of [0, 0.04].
    """
    if space.shape[-1:] != (len(SYMBOLIC_MAX),) or space.dtype != np.uint8:
        return space
    high = np.broadcast_to(np.asarray(SYMBOLIC_MAX, dtype=np.uint8), space.shape).copy()
    return spaces.Box(low=0, high=high, dtype=np.uint8)


class QuietLevelGeneration(gym.Wrapper):
    """Keeps BabyAI's level generator from printing to stdout on reset.

    minigrid prints "Sampling rejected: ..." each time it redraws a level whose
    object is unreachable (several times per reset on crowded levels), which
    would bury progress bars and logs; the redraw itself is expected and harmless.
    """

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        with contextlib.redirect_stdout(io.StringIO()):
            return self.env.reset(**kwargs)


class MissionAsText(gym.ObservationWrapper):
    """Declares the ``mission`` observation as a Text space and the ``image`` with its true bounds.

    The observations themselves are unchanged.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        declared = dict(env.observation_space.spaces)
        if isinstance(declared.get("image"), spaces.Box):
            declared["image"] = symbolic_view_space(declared["image"])
        self.observation_space = spaces.Dict(
            {**declared, "mission": spaces.Text(MAX_MISSION_LENGTH, min_length=1, charset=MISSION_CHARSET)}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return observation


class BabyAIExpert(gym.Wrapper):
    """Adds ``info["expert_action"]``: the BabyAI bot's action for the returned observation.

    The bot replans after every step from the action actually taken, so the
    labels stay right when the agent deviates (as DAgger needs). A finished
    episode's last step has no label (nothing is left to do). Where minigrid's
    bot cannot plan at all, the episode is truncated there (see ``_replan``).
    ``success`` is added too: a positive reward at termination, as in BabyAI.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self._bot_class = BabyAIBot
        self._bot: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self._bot = self._bot_class(self.env)
        return observation, {**info, "success": False, "expert_action": int(self._bot.replan())}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "success": bool(terminated and reward > 0)}
        if not (terminated or truncated):
            label = self._replan(int(action))
            if label is None:
                truncated = True  # the expert cannot go on from here: its demonstration ends
            else:
                info["expert_action"] = label
        return observation, reward, terminated, truncated, info

    def _replan(self, action: int) -> int | None:
        """The bot's next action; None when neither it nor a fresh bot can plan from this state.

        minigrid's bot can lose track of its own plan and assert (on PickupDist, while carrying an
        object it meant to move out of the way); a fresh bot then plans from the level as it is, but
        it cannot start with an object in hand.
        """
        try:
            return int(self._bot.replan(action))
        except AssertionError:
            self._bot = self._bot_class(self.env)
        try:
            return int(self._bot.replan())
        except AssertionError:
            return None


def facing(env: gym.Env) -> str:
    """What is in front of the agent: ``"<colour> <type>"`` ("red ball", "grey wall", "yellow door"), or "nothing"."""
    unwrapped = env.unwrapped
    cell = unwrapped.grid.get(*unwrapped.front_pos)
    return "nothing" if cell is None else f"{cell.color} {cell.type}"


class FacingInfo(gym.Wrapper):
    """Adds ``info["facing"]`` (see :func:`facing`) at reset and at every step."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "facing": facing(self.env)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "facing": facing(self.env)}
