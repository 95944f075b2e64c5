"""Evaluation episodes as animated GIFs, for a person to watch what the policy does.

Each frame shows the environment before the step and, beneath it, the text
observations (a mission, a question), the action taken and the return so
far; the last frame says how the episode ended. MiniGrid and BabyAI levels
are drawn whole by minigrid's own renderer (the agent's view highlighted);
other environments by their image observations, enlarged (DigitsVQA: the
digit, its question and the answer given).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TILE_SIZE = 16
MIN_IMAGE_SIDE = 160
FRAME_MS = 400
LAST_FRAME_MS = 1500
TEXT_WIDTH = 56


class EpisodeRecorder:
    """Records the first ``count`` episodes of a round (one per environment) into ``directory/PREFIX-N.gif``.

    Used as the :class:`~polyfuse.training.evaluation.StepObserver` of one
    :meth:`~polyfuse.training.evaluation.Evaluator.play_round`.
    """

    def __init__(self, directory: Path, prefix: str, count: int, action_names: Sequence[str] | None) -> None:
        self.directory = directory
        self.prefix = prefix
        self.count = count
        self.action_names = action_names
        self.frames: dict[int, list[Any]] = {}
        self.returns: dict[int, float] = {}
        self.done: set[int] = set()
        self.written: list[Path] = []

    def before_step(self, envs: Any, observations: Any, actions: np.ndarray, running: np.ndarray) -> None:
        for index in range(min(self.count, len(running))):
            if not running[index]:
                continue
            observation = {key: value[index] for key, value in observations.items()}
            steps = len(self.frames.setdefault(index, []))
            texts = [f"{key}: {value}" for key, value in observation.items() if isinstance(value, str)]
            caption = "\n".join([*texts, f"step {steps + 1}: {self._action_name(actions[index])}",
                                 f"return so far {self.returns.setdefault(index, 0.0):.3g}"])
            picture = _picture(_environment_image(envs, index, observation))
            self.frames[index].append(_with_caption(picture, caption))

    def after_step(self, rewards: np.ndarray, ended: np.ndarray, success: np.ndarray) -> None:
        for index in self.frames:
            if index in self.done:
                continue
            self.returns[index] += float(rewards[index])
            if ended[index]:
                self._finish(index, bool(success[index]))

    def _finish(self, index: int, success: bool) -> None:
        from PIL import Image

        self.done.add(index)
        outcome = f"{'SUCCESS' if success else 'FAILURE'}: return {self.returns[index]:.3g} in {len(self.frames[index])} steps"
        last = self.frames[index][-1]
        frames = [*self.frames[index], _with_caption(last, outcome, banner=(40, 140, 60) if success else (170, 40, 40))]
        size = (max(f.width for f in frames), max(f.height for f in frames))
        frames = [_padded(frame, size, Image) for frame in frames]
        path = self.directory / f"{self.prefix}-{index}.gif"
        self.directory.mkdir(parents=True, exist_ok=True)
        frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                       duration=[FRAME_MS] * (len(frames) - 1) + [LAST_FRAME_MS])
        self.written.append(path)

    def _action_name(self, action: Any) -> str:
        value = np.asarray(action)
        if value.ndim == 0 and self.action_names is not None and 0 <= int(value) < len(self.action_names):
            return f"{self.action_names[int(value)]} (action {int(value)})"
        return f"action {value.tolist()}"


def _environment_image(envs: Any, index: int, observation: dict[str, Any]) -> np.ndarray:
    """An RGB array of the environment before the step: minigrid's rendering, else the image observations."""
    single = envs.envs[index] if hasattr(envs, "envs") else None
    inner = getattr(single, "unwrapped", None)
    if inner is not None and callable(getattr(inner, "get_frame", None)):
        return np.asarray(inner.get_frame(highlight=True, tile_size=TILE_SIZE), dtype=np.uint8)
    images = [_as_rgb(value) for value in observation.values() if _is_image(value)]
    if not images:
        return np.full((MIN_IMAGE_SIDE // 2, MIN_IMAGE_SIDE, 3), 255, dtype=np.uint8)
    height = max(image.shape[0] for image in images)
    return np.concatenate([np.pad(image, ((0, height - image.shape[0]), (0, 4), (0, 0)), constant_values=255)
                           for image in images], axis=1)


def _is_image(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim in (2, 3) and min(value.shape[:2]) >= 4 and \
        (value.ndim == 2 or value.shape[2] in (1, 3))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Scaled to 0-255 by its values, three channels, enlarged (nearest) to at least MIN_IMAGE_SIDE pixels."""
    data = image.astype(np.float64)
    span = data.max() - data.min()
    data = (data - data.min()) / span * 255.0 if span > 0 else np.zeros_like(data)
    data = data.reshape(*data.shape[:2], -1)
    data = np.repeat(data, 3, axis=2) if data.shape[2] == 1 else data
    scale = max(1, -(-MIN_IMAGE_SIDE // min(data.shape[:2])))
    return np.kron(data, np.ones((scale, scale, 1))).astype(np.uint8)


def _picture(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(array, mode="RGB")


def _wrap(text: str) -> list[str]:
    import textwrap

    return [part for line in text.splitlines() for part in textwrap.wrap(line, TEXT_WIDTH) or [""]]


def _with_caption(picture: Any, caption: str, banner: tuple[int, int, int] | None = None) -> Any:
    """``picture`` with ``caption`` written under it (on a coloured banner for the outcome)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    lines = _wrap(caption)
    line_height = 15
    width = max(picture.width, 8 + max(int(font.getlength(line)) for line in lines))
    canvas = Image.new("RGB", (width, picture.height + 6 + line_height * len(lines)), banner or (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        draw.text((4, picture.height + 3 + row * line_height), line, fill=(255, 255, 255) if banner else (0, 0, 0),
                  font=font)
    return canvas


def _padded(frame: Any, size: tuple[int, int], image_module: Any) -> Any:
    if frame.size == size:
        return frame
    canvas = image_module.new("RGB", size, (255, 255, 255))
    canvas.paste(frame, (0, 0))
    return canvas
