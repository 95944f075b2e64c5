"""The contract every encoder follows, built-in or third-party, and the batch conversions they share.

An encoder turns a batch of raw observations of one modality into
``(B, output_dim)`` features. Raw batches come straight from gymnasium's
vector environments: numpy arrays (images, vectors, discrete values) or
sequences of strings (text; a numpy array of ``str`` objects or a list).

The helpers below turn those batches into tensors and reject bad data with a
``ValueError`` that names the modality and the offending sample, so a NaN
from one environment out of sixteen is found in seconds, not hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

IMAGE_CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA


class Encoder(nn.Module):
    """Base class of encoders.

    Subclasses set ``output_dim`` and implement ``forward(batch)``. An encoder
    whose parameters are all frozen must be a pure function of its input (no
    active dropout, fixed normalisation statistics), which lets polyfuse
    cache its features (see :mod:`polyfuse.feature_cache`) and share it
    between an optimizer's networks (:func:`polyfuse.network.frozen_twin`).
    ``identity()`` must then describe everything the output depends on
    (architecture, weights, preprocessing) so cached features are never
    reused across different encoders.

    ``modality`` is the pipeline's name for the modality the encoder reads
    (set by :class:`polyfuse.network.MultimodalNetwork`); data errors name it.
    ``cacheable = False`` opts out of the feature cache, for encoders cheaper
    than a cache look-up (a one-hot encoding).
    """

    output_dim: int
    modality: str = "input"
    cacheable: bool = True

    def forward(self, batch: Any) -> torch.Tensor:  # noqa: D102 - documented on the class
        raise NotImplementedError

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def identity(self) -> str:
        """A string naming this encoder's configuration and weights (used as the cache namespace)."""
        raise NotImplementedError(f"{type(self).__name__} does not support feature caching")


def weights_digest(module: nn.Module) -> str:
    """A hex digest of every tensor in ``module.state_dict()`` (names, dtypes, shapes and values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing the array's memory when it can; a copy when the array is read-only (PIL's)."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def flagged(mask: torch.Tensor) -> bool:
    """Whether ``mask`` flags any input; never while an export traces the network (``polyfuse export``): a
    branch on the data cannot be traced, and an exported model's runtime owns its inputs."""
    return not torch.compiler.is_exporting() and bool(mask.any())


def first_bad_sample(mask: torch.Tensor) -> int:
    """Index of the first sample (row) in which ``mask`` is True anywhere."""
    return int(mask.reshape(mask.shape[0], -1).any(dim=1).nonzero()[0, 0])


def check_finite(values: torch.Tensor, modality: str) -> None:
    """Raise naming the first sample that holds NaN or infinity (floating tensors only)."""
    if values.is_floating_point() and values.numel() and flagged(~torch.isfinite(values)):
        index = first_bad_sample(~torch.isfinite(values))
        raise ValueError(f"modality {modality!r}: sample {index} contains NaN or infinite values")


def text_batch(batch: Any, modality: str) -> list[str]:
    """A batch of text as a list of ``str``: a tuple or list of strings, or a 1-D numpy array of them."""
    if isinstance(batch, str):
        raise ValueError(
            f"modality {modality!r}: expected a batch of strings, got a single string; wrap it in a list"
        )
    if isinstance(batch, np.ndarray):
        if batch.ndim != 1:
            raise ValueError(
                f"modality {modality!r}: expected a 1-D batch of strings, got an array of shape {batch.shape}"
            )
        batch = batch.tolist()
    if not isinstance(batch, Sequence):
        raise ValueError(
            f"modality {modality!r}: expected a batch of strings (list, tuple or array), "
            f"got {type(batch).__name__}"
        )
    for index, text in enumerate(batch):
        if not isinstance(text, str):
            raise ValueError(
                f"modality {modality!r}: sample {index} is a {type(text).__name__} "
                f"({text!r:.60}), not a string"
            )
    return list(batch)


def numeric_batch(batch: Any, modality: str, sample_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A batch of numbers (bool, int or float) as a tensor ``(B, *sample_shape)``, checked for NaN."""
    if isinstance(batch, torch.Tensor):
        tensor = batch
    else:
        array = np.asarray(batch)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"modality {modality!r}: expected numbers, got an array of dtype {array.dtype}")
        tensor = _from_numpy(array)
    if tensor.dim() == 0 or (sample_shape is not None and tuple(tensor.shape[1:]) != tuple(sample_shape)):
        expected = "(B, ...)" if sample_shape is None else f"({', '.join(['B', *map(str, sample_shape)])})"
        raise ValueError(
            f"modality {modality!r}: expected a batch of shape {expected}, got {tuple(tensor.shape)}"
        )
    check_finite(tensor, modality)
    return tensor


def _pil_to_array(image: Any) -> np.ndarray:
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image)


def _stack_images(batch: Sequence[Any], modality: str) -> torch.Tensor:
    """Stack a list of PIL images, ``(H, W[, C])`` arrays or ``(C, H, W)`` tensors into NCHW."""
    samples = []
    for index, image in enumerate(batch):
        if hasattr(image, "getbands"):  # a PIL image
            image = _pil_to_array(image)
        if isinstance(image, torch.Tensor):
            tensor = image if image.dim() == 3 else image.unsqueeze(0)
        else:
            array = np.asarray(image)
            if array.dtype.kind not in "biuf" or array.ndim not in (2, 3):
                raise ValueError(
                    f"modality {modality!r}: sample {index} is not an image (got {type(image).__name__} "
                    f"with shape {getattr(array, 'shape', '?')} and dtype {array.dtype})"
                )
            tensor = _from_numpy(array)
            tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
        if samples and tensor.shape != samples[0].shape:
            raise ValueError(
                f"modality {modality!r}: sample {index} has shape {tuple(tensor.shape)} (C, H, W) but "
                f"sample 0 has {tuple(samples[0].shape)}; resize images to one size before batching"
            )
        samples.append(tensor)
    if not samples:
        raise ValueError(f"modality {modality!r}: the batch is empty")
    return torch.stack(samples)


def _as_nchw(batch: Any, modality: str) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        tensor = batch.unsqueeze(1) if batch.dim() == 3 else batch
        if tensor.dim() != 4 or tensor.shape[1] not in IMAGE_CHANNELS:
            hint = ""
            if tensor.dim() == 4 and tensor.shape[-1] in IMAGE_CHANNELS:
                hint = "; it looks channels-last: tensors are (B, C, H, W), use tensor.permute(0, 3, 1, 2)"
            raise ValueError(
                f"modality {modality!r}: expected image tensors of shape (B, C, H, W) "
                f"with C in {IMAGE_CHANNELS}, got {tuple(batch.shape)}{hint}"
            )
        return tensor
    if isinstance(batch, np.ndarray) and batch.dtype != object:
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4 or batch.shape[-1] not in IMAGE_CHANNELS:
            hint = ""
            if batch.ndim == 4 and batch.shape[1] in IMAGE_CHANNELS:
                hint = "; it looks channels-first: numpy images are (B, H, W, C) as gymnasium returns them"
            raise ValueError(
                f"modality {modality!r}: expected numpy images of shape (B, H, W, C) "
                f"with C in {IMAGE_CHANNELS} or (B, H, W), got {batch.shape}{hint}"
            )
        if batch.dtype.kind not in "biuf":
            raise ValueError(
                f"modality {modality!r}: expected uint8 or float images, got dtype {batch.dtype}"
            )
        return _from_numpy(batch).permute(0, 3, 1, 2)
    if isinstance(batch, (list, tuple, np.ndarray)):
        return _stack_images(list(batch), modality)
    raise ValueError(f"modality {modality!r}: expected a batch of images, got {type(batch).__name__}")


def image_batch(batch: Any, modality: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch of images as a float32 ``(B, C, H, W)`` tensor in [0, 1] on ``device``, C in (1, 3, 4).

    Accepts numpy arrays ``(B, H, W, C)`` or ``(B, H, W)`` (gymnasium's layout),
    tensors ``(B, C, H, W)``, and lists of PIL images, arrays or tensors.
    Integer images are 0..255 and are scaled; float images must already lie in
    [0, 1] (a float image in 0..255 is an error rather than a silently washed-out input).
    A float32 NCHW tensor input is returned as is, not copied.
    """
    tensor = _as_nchw(batch, modality).to(device)
    if tensor.shape[0] == 0:
        raise ValueError(f"modality {modality!r}: the batch is empty")
    if tensor.is_floating_point():
        check_finite(tensor, modality)
        outside = (tensor < 0) | (tensor > 1)
        if flagged(outside):
            index = first_bad_sample(outside)
            peak = float(tensor[index].abs().max())
            raise ValueError(
                f"modality {modality!r}: sample {index} has values outside [0, 1] (up to {peak:g}); "
                "float images must be scaled to [0, 1] (pass uint8 arrays for 0..255 images)"
            )
        return tensor.contiguous().to(torch.float32)
    if tensor.dtype == torch.bool:
        return tensor.contiguous().to(torch.float32)
    if tensor.dtype != torch.uint8:
        outside = (tensor < 0) | (tensor > 255)
        if flagged(outside):
            index = first_bad_sample(outside)
            raise ValueError(f"modality {modality!r}: sample {index} has integer values outside 0..255")
    return tensor.contiguous().to(torch.float32).mul_(1 / 255)  # uint8 copy first: 4x less to move
