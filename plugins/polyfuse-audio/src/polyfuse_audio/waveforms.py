"""Raw audio batches to float tensors, with errors that name the modality and the sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polyfuse.encoding import check_finite

INT16_SCALE = 1.0 / 32768.0


def waveform_batch(batch: Any, modality: str) -> torch.Tensor:
    """A batch of mono waveforms as float32 ``(B, T)`` in [-1, 1].

    Takes an array or tensor ``(B, T)`` (float, or int16 scaled by 1/32768), or a sequence of
    1-D waveforms of different lengths, padded at the end with silence.
    """
    if isinstance(batch, (list, tuple)) and batch and not np.isscalar(batch[0]):
        waveforms = [_as_float(np.asarray(w) if not isinstance(w, torch.Tensor) else w, modality, i)
                     for i, w in enumerate(batch)]
        for index, waveform in enumerate(waveforms):
            if waveform.dim() != 1:
                raise ValueError(f"modality {modality!r}: sample {index} has shape {tuple(waveform.shape)}; "
                                 "audio samples are mono, 1-D waveforms")
        tensor = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
    else:
        array = batch if isinstance(batch, torch.Tensor) else np.asarray(batch)
        tensor = _as_float(array, modality, None)
        if tensor.dim() != 2:
            raise ValueError(f"modality {modality!r}: expected a batch of mono waveforms (B, T), "
                             f"got shape {tuple(tensor.shape)}")
    if tensor.shape[-1] == 0:
        raise ValueError(f"modality {modality!r}: the waveforms are empty")
    check_finite(tensor, modality)
    return tensor


def _as_float(values: Any, modality: str, index: int | None) -> torch.Tensor:
    where = f"sample {index}" if index is not None else "the batch"
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise ValueError(f"modality {modality!r}: {where} holds {values.dtype}, not audio samples")
        values = torch.from_numpy(np.ascontiguousarray(values))
    if values.dtype == torch.int16:
        return values.float() * INT16_SCALE
    if not values.is_floating_point():
        raise ValueError(f"modality {modality!r}: {where} holds {values.dtype}; audio is float in [-1, 1] "
                         "or int16")
    return values.float()
