"""Showing a segment to a person: images as images, text as text, actions by name.

A run describes its observations once (:func:`describe_observations`, kept in the project's
``display``); :func:`render_segment` then turns a stored segment into what the annotation app shows:

- ``image``: pixel arrays (H, W), (H, W, 1|3|4) or (1|3, H, W), enlarged without blurring so an 8x8
  digit scan is legible;
- ``minigrid``: MiniGrid/BabyAI's symbolic (7, 7, 3) view, drawn by minigrid's own renderer as the
  agent sees it (the agent at the bottom centre, facing up);
- ``text``: each distinct text of the segment (a mission is usually one);
- ``discrete`` and ``vector``: the numbers, per step.

A segment of several steps becomes an animated GIF plus a filmstrip of up to :data:`FILMSTRIP_FRAMES`
frames; a single step (a bandit's outcome) one PNG. Media are ``data:`` URIs, so a page or an API
answer carries everything needed to show the query.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from polyfuse.rewards import Segment

MIN_IMAGE_SIDE = 160  # pixels: small images are enlarged by a whole factor up to at least this
MINIGRID_TILE = 24
FILMSTRIP_FRAMES = 12
FRAME_MS = 250
KINDS = ("image", "minigrid", "text", "discrete", "vector")


def describe_observations(observation_space: Any, env_id: str | None) -> dict[str, str]:
    """Each observation key's kind (see the module docstring), from a gymnasium ``Dict`` space."""
    from gymnasium import spaces
    from polyfuse.envs.babyai import is_minigrid_id

    if observation_space is None:  # a run learning from a dataset only
        return {}
    subspaces = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {"observation":
                                                                                           observation_space}
    kinds = {}
    for key, space in subspaces.items():
        if isinstance(space, spaces.Text):
            kinds[key] = "text"
        elif isinstance(space, spaces.Discrete):
            kinds[key] = "discrete"
        elif env_id and is_minigrid_id(env_id) and key == "image" and tuple(space.shape)[-1:] == (3,):
            kinds[key] = "minigrid"
        elif isinstance(space, spaces.Box) and _image_shape(tuple(space.shape)) is not None:
            kinds[key] = "image"
        else:
            kinds[key] = "vector"
    return kinds


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) of an image-shaped array (channels last or first), or ``None``."""
    if len(shape) == 2 and min(shape) >= 2:
        return shape  # type: ignore[return-value]
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and min(shape[:2]) >= 2:
        return shape[0], shape[1]
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) >= 2:
        return shape[1], shape[2]
    return None


@dataclass
class RenderedSegment:
    """What a person sees of a segment."""

    steps: int
    actions: list[str]
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {"animation"|"still", "filmstrip"}
    texts: dict[str, list[str]] = field(default_factory=dict)
    numbers: dict[str, list[list[float | int]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "actions": self.actions, "images": self.images, "texts": self.texts,
                "numbers": self.numbers}


def render_segment(segment: Segment, display: Mapping[str, Any]) -> RenderedSegment:
    """``segment`` as a person sees it, by the project's ``display`` (``observations``: kind per key, ``actions``)."""
    kinds = display.get("observations", {})
    names: Sequence[str] = display.get("actions") or ()
    actions = [names[a] if 0 <= a < len(names) else f"action {a}"
               for a in (int(x) for x in np.asarray(segment.actions).reshape(len(segment), -1)[:, 0])]
    shown = RenderedSegment(len(segment), actions)
    for key, values in segment.observations.items():
        kind = kinds.get(key) or _guess_kind(values)
        if kind == "text":
            shown.texts[key] = list(dict.fromkeys(str(v) for v in values))
        elif kind in ("image", "minigrid"):
            frames = [_minigrid_frame(v) if kind == "minigrid" else _image_frame(np.asarray(v)) for v in values]
            shown.images[key] = _media(frames)
        else:
            array = np.asarray(values, dtype=float).reshape(len(segment), -1)
            whole = bool(np.all(array == np.round(array)))
            shown.numbers[key] = [[int(x) if whole else round(float(x), 4) for x in row] for row in array]
    return shown


def _guess_kind(values: Any) -> str:
    if isinstance(values, (tuple, list)) and values and isinstance(values[0], str):
        return "text"
    shape = np.asarray(values).shape[1:]
    return "image" if _image_shape(tuple(shape)) is not None else "vector"


def _image_frame(array: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 frame of a pixel array, scaled to 0-255 if it is not already bytes."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8:
        low, high = float(np.min(array)), float(np.max(array))
        array = ((array - low) / (high - low or 1.0) * 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def _minigrid_frame(array: Any) -> np.ndarray:
    from minigrid.core.grid import Grid

    grid, visible = Grid.decode(np.asarray(array, dtype=np.uint8))
    return grid.render(MINIGRID_TILE, agent_pos=(grid.width // 2, grid.height - 1), agent_dir=3,
                       highlight_mask=visible)


def _enlarge(frame: np.ndarray) -> np.ndarray:
    factor = max(1, -(-MIN_IMAGE_SIDE // max(1, min(frame.shape[:2]))))
    return frame.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else frame


def _data_uri(image: Any, fmt: str, **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _media(frames: Sequence[np.ndarray]) -> dict[str, str]:
    from PIL import Image

    pictures = [Image.fromarray(_enlarge(frame)) for frame in frames]
    if len(pictures) == 1:
        return {"still": _data_uri(pictures[0], "PNG")}
    animation = _data_uri(pictures[0], "GIF", save_all=True, append_images=pictures[1:], duration=FRAME_MS, loop=0)
    picks = np.unique(np.linspace(0, len(frames) - 1, min(FILMSTRIP_FRAMES, len(frames))).round().astype(int))
    small = [Image.fromarray(frames[i]) for i in picks]
    strip = Image.new("RGB", (sum(p.width for p in small) + 4 * (len(small) - 1), max(p.height for p in small)),
                      (255, 255, 255))
    x = 0
    for picture in small:
        strip.paste(picture, (x, 0))
        x += picture.width + 4
    return {"animation": animation, "filmstrip": _data_uri(strip, "PNG")}
