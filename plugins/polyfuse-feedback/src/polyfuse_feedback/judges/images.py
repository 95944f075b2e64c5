"""Image observations as PNG data URLs for vision-language models, with the standard library only (zlib)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA


def is_image(steps: object) -> bool:
    """Whether a segment's observation (steps first) is a uint8 image per step: (T, H, W) or (T, H, W, 1|3|4)."""
    return (isinstance(steps, np.ndarray) and steps.dtype == np.uint8
            and (steps.ndim == 3 or (steps.ndim == 4 and steps.shape[-1] in COLOUR_TYPES)))


def enlarge(image: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor, to at least ``min_size`` pixels a side (8x8 -> 128x128)."""
    factor = max(1, -(-min_size // max(1, min(image.shape[:2]))))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, C) array, C in 1, 3, 4, as a PNG file."""
    image = np.ascontiguousarray(image if image.ndim == 3 else image[..., None], dtype=np.uint8)
    height, width, channels = image.shape
    if channels not in COLOUR_TYPES:
        raise ValueError(f"a PNG needs 1, 3 or 4 channels, the image has {channels}")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + chunk(b"IEND", b""))


def data_url(image: np.ndarray, min_size: int) -> str:
    """``data:image/png;base64,...`` of ``image``, enlarged to ``min_size``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(enlarge(image, min_size))).decode("ascii")
