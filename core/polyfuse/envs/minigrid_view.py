"""MiniGrid's partial view from a cached encoding of the grid: ``gen_obs``'s observation, bit for bit, faster.

MiniGrid builds each step's view by copying the visible square into a new
``Grid`` (a new ``Wall`` object per cell off the map), rotating that grid cell by
cell up to four times, running its occlusion pass cell by cell and encoding the
result object by object: about two thirds of a BabyAI level's ``step``, and most
of an RL loop on these simulators. Here the whole grid's codes and see-through
flags are kept in arrays (padded with MiniGrid's off-map walls) and kept current:
cells that ``Grid.set`` replaced are found by comparing the cell list with the
last one seen, and cells whose code can change in place (doors open and unlock;
objects of classes MiniGrid does not ship, subclasses included) are read again each
step. Objects of MiniGrid's other classes are taken as fixed: a level that recolours
one in place after reset needs ``make_env(..., minigrid_view="stock")``. A view is
then an array slice and a rotation; the occlusion pass runs row by row on bit
masks, through a cache of MiniGrid's own per-row rule. Tests compare the two
step by step across levels, doors, boxes, carried objects and moving obstacles.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

EMPTY = (1, 0, 0)  # minigrid.core.constants: OBJECT_TO_IDX["empty"], no colour, no state
MAX_VIEW = 63  # rows are bit masks in int64: wider views take MiniGrid's own path
TABLE_VIEW = 15  # up to this width, row masks unpack through a 2 ** width table (0.5 MB at 15)
GRID_METHODS = ("get", "set", "slice", "rotate_left", "process_vis", "encode")  # what gen_obs calls on the grid


def use_indexed_view(env: Any) -> bool:
    """Give ``env`` (a ``MiniGridEnv``, unwrapped) the cached view; False where its class builds its own view."""
    from minigrid.minigrid_env import MiniGridEnv

    cls = type(env)
    if cls.gen_obs is not MiniGridEnv.gen_obs or cls.gen_obs_grid is not MiniGridEnv.gen_obs_grid:
        return False
    env.gen_obs = IndexedView(env)
    return True


class IndexedView:
    """``env.gen_obs`` for one environment: its grid's codes, kept current between steps."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self._grid: Any = None  # the Grid the arrays describe (a new one each reset)
        self._size = 0  # the view size the padding was made for
        self._cells: list[Any] = []  # the grid's cell list when last read
        self._codes = np.zeros((0, 0, 3), dtype=np.uint8)  # [x + size, y + size]: the cell's code
        self._clear = np.zeros((0, 0), dtype=bool)  # [x + size, y + size]: light passes the cell
        self._volatile: set[int] = set()  # cell indices whose code or see-through flag can change in place

    def __call__(self) -> dict[str, Any]:
        env = self.env
        grid = env.grid
        size = env.agent_view_size
        if size > MAX_VIEW or not _stock_grid(type(grid)):  # a grid class of its own may not keep cells in grid.grid
            from minigrid.minigrid_env import MiniGridEnv

            return MiniGridEnv.gen_obs(env)
        if grid is not self._grid or size != self._size:
            self._read_grid(grid, size)
        else:
            self._refresh(grid)
        top_x, top_y, _, _ = env.get_view_exts()
        window = (slice(top_x + size, top_x + 2 * size), slice(top_y + size, top_y + 2 * size))
        image = _turned(self._codes[window], env.agent_dir).copy()
        agent_i, agent_j = size // 2, size - 1
        if not env.see_through_walls:
            image[~_visibility(_turned(self._clear[window], env.agent_dir), agent_i, agent_j)] = 0
        image[agent_i, agent_j] = EMPTY if env.carrying is None else env.carrying.encode()
        return {"image": image, "direction": env.agent_dir, "mission": env.mission}

    def _read_grid(self, grid: Any, size: int) -> None:
        """Encode every cell of a new grid, inside a border of off-map walls as wide as the view."""
        wall_code, wall_clear = _cell(_wall())
        width, height = grid.width, grid.height
        self._codes = np.empty((width + 2 * size, height + 2 * size, 3), dtype=np.uint8)
        self._codes[:] = wall_code
        self._clear = np.full((width + 2 * size, height + 2 * size), wall_clear)
        self._grid, self._size, self._volatile = grid, size, set()
        self._cells = list(grid.grid)
        for index in range(len(self._cells)):
            self._read_cell(index)

    def _refresh(self, grid: Any) -> None:
        cells = grid.grid
        if cells != self._cells:  # Grid.set replaced objects (picked up, dropped, a box opened, an obstacle moved)
            changed = [index for index, (now, before) in enumerate(zip(cells, self._cells)) if now is not before]
            self._cells = list(cells)
            for index in changed:
                self._read_cell(index)
        for index in tuple(self._volatile):
            self._read_cell(index)

    def _read_cell(self, index: int) -> None:
        obj = self._cells[index]
        x, y = index % self._grid.width + self._size, index // self._grid.width + self._size
        self._codes[x, y], self._clear[x, y] = _cell(obj)
        if obj is not None and not _static(type(obj)):
            self._volatile.add(index)
        else:
            self._volatile.discard(index)


def _cell(obj: Any) -> tuple[tuple[int, int, int], bool]:
    """A cell's code and whether light passes it, as ``Grid.encode`` and ``Grid.process_vis`` read them."""
    if obj is None:
        return EMPTY, True
    return obj.encode(), bool(obj.see_behind())


@functools.cache
def _stock_grid(cls: type) -> bool:
    """Whether a grid class builds the view with ``Grid``'s own methods (and so keeps its cells in ``grid.grid``)."""
    from minigrid.core.grid import Grid

    return all(getattr(cls, name) is getattr(Grid, name) for name in GRID_METHODS)


@functools.cache
def _static(cls: type) -> bool:
    """Whether a class's code and see-through flag are fixed: MiniGrid's own classes other than doors.

    Only the exact classes: a subclass (a lamp that recolours itself when toggled) may change in place.
    """
    from minigrid.core import world_object

    return cls in (world_object.Wall, world_object.Floor, world_object.Lava, world_object.Goal,
                   world_object.Key, world_object.Ball, world_object.Box)


def _turned(square: np.ndarray, direction: int) -> np.ndarray:
    """The square as ``gen_obs_grid`` turns it: rotated left ``direction + 1`` times, (i, j) -> (j, size - 1 - i).

    ``np.rot90``'s views, without its per-call argument handling (a third of this module's time).
    """
    turns = (direction + 1) % 4
    if turns == 1:
        return square.swapaxes(0, 1)[:, ::-1]
    if turns == 2:
        return square[::-1, ::-1]
    if turns == 3:
        return square[:, ::-1].swapaxes(0, 1)
    return square


def _visibility(clear: np.ndarray, agent_i: int, agent_j: int) -> np.ndarray:
    """``Grid.process_vis``'s mask ``[i, j]`` over a view whose cells let light through where ``clear``.

    MiniGrid lights the agent's cell, then sweeps rows from the agent's (the last) up; what a row
    lights depends only on its cells lit from below and its clear cells, so each row is one lookup.
    """
    size = clear.shape[0]
    weights = _weights(size)
    clear_rows = (weights @ clear).tolist()  # row j's bit i: cell (i, j) is clear
    lit_rows = [0] * size
    lit = 1 << agent_i
    for j in range(agent_j, -1, -1):
        lit_rows[j], lit = _row(size, lit, clear_rows[j])
    if size <= TABLE_VIEW:
        return _bit_patterns(size)[lit_rows].T
    return (np.array(lit_rows, dtype=np.int64)[:, None] & weights).astype(bool).T


@functools.cache
def _weights(size: int) -> np.ndarray:
    """The bits' weights ``2 ** i`` (int64: ``size`` up to :data:`MAX_VIEW`)."""
    return np.left_shift(np.int64(1), np.arange(size, dtype=np.int64))


@functools.cache
def _bit_patterns(size: int) -> np.ndarray:
    """``[n, i]``: bit i of n, for every n below ``2 ** size`` (views up to :data:`TABLE_VIEW` wide)."""
    return (np.arange(2**size)[:, None] & _weights(size)[None, :]).astype(bool)


@functools.lru_cache(maxsize=1 << 16)  # every (lit, clear) pair of a 7-wide view; wide views would grow without end
def _row(size: int, lit: int, clear: int) -> tuple[int, int]:
    """``Grid.process_vis`` on one row: (cells lit in it, cells it lights in the row above), as bit masks.

    The same two sweeps in the same order: a lit clear cell lights its neighbour along the row and
    the two cells above them.
    """
    row = [bool(lit >> i & 1) for i in range(size)]
    above = [False] * size
    for i in range(size - 1):
        if row[i] and clear >> i & 1:
            row[i + 1] = above[i + 1] = above[i] = True
    for i in reversed(range(1, size)):
        if row[i] and clear >> i & 1:
            row[i - 1] = above[i - 1] = above[i] = True
    return sum(1 << i for i in range(size) if row[i]), sum(1 << i for i in range(size) if above[i])


@functools.cache
def _wall() -> Any:
    """The wall MiniGrid shows off the map (grey, opaque)."""
    from minigrid.core.world_object import Wall

    return Wall()
