"""The cached MiniGrid view gives exactly MiniGrid's own observation, step by step, on levels that exercise it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("minigrid")

import gymnasium as gym  # noqa: E402
from minigrid.core.grid import Grid  # noqa: E402
from minigrid.core.mission import MissionSpace  # noqa: E402
from minigrid.core.world_object import Ball  # noqa: E402
from minigrid.minigrid_env import MiniGridEnv  # noqa: E402

from polyfuse.envs import make_env  # noqa: E402
from polyfuse.envs.minigrid_view import IndexedView, use_indexed_view  # noqa: E402

PICKUP, DROP, TOGGLE = 3, 4, 5


def assert_same_views(env: gym.Env, steps: int, seed: int) -> None:
    """Random play biased to pick up, drop and toggle; every observation equals MiniGridEnv.gen_obs's."""
    unwrapped = env.unwrapped
    assert isinstance(unwrapped.gen_obs, IndexedView)
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    for _ in range(steps):
        stock = MiniGridEnv.gen_obs(unwrapped)
        assert np.array_equal(observation["image"], stock["image"])
        assert observation["direction"] == stock["direction"] and observation["mission"] == stock["mission"]
        action = int(rng.choice([0, 1, 2, 2, PICKUP, DROP, TOGGLE]))
        observation, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            observation, _ = env.reset(seed=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("env_id", [
    "BabyAI-GoToLocalS6N2-v0",        # the benchmark level
    "BabyAI-PutNextLocalS6N4-v0",     # carrying, dropping next to objects
    "BabyAI-OpenDoorsOrderN4-v0",     # doors opened and closed in place
    "MiniGrid-KeyCorridorS3R2-v0",    # locked doors, keys carried
    "BabyAI-KeyInBox-v0",             # boxes replaced by their contents
    "MiniGrid-Dynamic-Obstacles-6x6-v0",  # obstacles moved by the level itself
    "BabyAI-BossLevel-v0",            # 22x22, many doors, walls off the view
])
def test_the_cached_view_equals_minigrids_own(env_id: str) -> None:
    assert_same_views(make_env(env_id), steps=400, seed=1)


@pytest.mark.parametrize("kwargs", [{"agent_view_size": 5}, {"see_through_walls": True}])
def test_view_size_and_see_through_walls_are_honoured(kwargs: dict[str, Any]) -> None:
    assert_same_views(make_env("MiniGrid-FourRooms-v0", kwargs), steps=300, seed=2)


def test_stock_keeps_minigrids_view_and_a_level_with_its_own_view_keeps_it() -> None:
    stock = make_env("BabyAI-GoToLocalS6N2-v0", minigrid_view="stock")
    assert "gen_obs" not in vars(stock.unwrapped)

    class OwnView(type(stock.unwrapped)):  # type: ignore[misc]
        def gen_obs(self) -> dict[str, Any]:
            return {**super().gen_obs(), "image": np.zeros((7, 7, 3), dtype=np.uint8)}

    assert not use_indexed_view(OwnView())


def test_wide_views_equal_minigrids_own() -> None:
    """A view wider than the grid (full observability on a 25x25 level) without a 2 ** 33 table of bit patterns."""
    assert_same_views(make_env("MiniGrid-MultiRoom-N6-v0", {"agent_view_size": 33}), steps=60, seed=3)


class LampRoom(MiniGridEnv):
    """A room with a lamp: a Ball subclass that recolours itself in place when toggled."""

    def __init__(self, grid_class: type = Grid) -> None:
        self.grid_class = grid_class
        super().__init__(mission_space=MissionSpace(lambda: "toggle the lamp"), grid_size=6, max_steps=50)

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = self.grid_class(width, height)
        self.grid.wall_rect(0, 0, width, height)
        self.put_obj(Lamp("red"), 3, 2)
        self.agent_pos, self.agent_dir = (2, 2), 0


class Lamp(Ball):
    def toggle(self, env: MiniGridEnv, pos: tuple[int, int]) -> bool:
        self.color = "green" if self.color == "red" else "red"
        return True


class SeeThroughGrid(Grid):
    """A grid class that lights every cell: the view must come from its own process_vis."""

    def process_vis(self, agent_pos: tuple[int, int]) -> np.ndarray:
        return np.ones((self.width, self.height), dtype=bool)


@pytest.mark.parametrize("grid_class", [Grid, SeeThroughGrid])
def test_objects_of_other_classes_and_grids_of_other_classes_are_honoured(grid_class: type) -> None:
    env = LampRoom(grid_class)
    assert use_indexed_view(env)
    env.reset(seed=0)
    for action in [TOGGLE, 1, 1, 2, 1, 1, TOGGLE, 0, 0, TOGGLE]:
        observation, *_ = env.step(action)
        assert np.array_equal(observation["image"], MiniGridEnv.gen_obs(env)["image"])
